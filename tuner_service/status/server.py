"""gRPC server factory for the status API (its own port, beside keras-tuner's Oracle service)."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tuner_service.status._generated import status_pb2 as pb
from tuner_service.status._generated import status_pb2_grpc as pb_grpc
from tuner_service.status.events import EventHub
from tuner_service.status.servicer import StatusServicer
from tuner_service.study.history import TrialHistory
from tuner_service.study.ledger import Ledger

# Each WatchEvents stream holds a thread for its lifetime; unary calls are short.
MAX_WORKERS = 16
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Status"].full_name


@dataclass
class StatusServer:
    server: grpc.Server
    hub: EventHub
    port: int

    def start(self) -> StatusServer:
        self.server.start()
        return self

    def close(self, grace: float = 0.5) -> None:
        """End the event streams, then stop serving."""
        self.hub.close()
        self.server.stop(grace).wait()


def make_status_server(
    ledger: Ledger,
    address: str,
    *,
    objective: str = "",
    direction: str = "",
    history_path: Path | None = None,
    max_workers: int = MAX_WORKERS,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
) -> StatusServer:
    """Build (not start) the status server on ``address`` ("host:port", port 0 picks one).

    Trial histories are recorded from now on (and appended to ``history_path`` if given, after
    what it already holds).
    """
    hub = EventHub(ledger)
    history = TrialHistory(history_path).attach(ledger)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="status-rpc"),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],
    )
    pb_grpc.add_StatusServicer_to_server(
        StatusServicer(ledger, hub, history, objective=objective, direction=direction), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return StatusServer(server, hub, port)
