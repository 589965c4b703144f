"""The status API's server (its own port, beside keras-tuner's Oracle service).

Built by the shared factory (:mod:`tuner_service.grpc_server`), like the Oracle server, so both
ports get the same auth and TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from tuner_service.auth import ServerSecurity
from tuner_service.grpc_server import make_grpc_server
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
    security: ServerSecurity | None = None,
) -> StatusServer:
    """Build (not start) the status server on ``address`` ("host:port", port 0 picks one).

    Trial histories are recorded from now on (and appended to ``history_path`` if given, after
    what it already holds).
    """
    hub = EventHub(ledger)
    history = TrialHistory(history_path).attach(ledger)
    servicer = StatusServicer(ledger, hub, history, objective=objective, direction=direction)
    built = make_grpc_server(
        address,
        lambda server: pb_grpc.add_StatusServicer_to_server(servicer, server),
        services=(SERVICE_NAME,),
        security=security or ServerSecurity(),
        max_workers=max_workers,
        thread_name_prefix="status-rpc",
    )
    return StatusServer(built.server, hub, built.port)
