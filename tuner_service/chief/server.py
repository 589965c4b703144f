"""gRPC server factory for the chief: the Oracle service plus standard health checking."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tuner_service import compat
from tuner_service.chief.servicer import OracleServicer

# Enough threads that 256 workers' short calls never queue behind one another for long; the
# oracle itself serialises state changes with keras-tuner's own lock.
MAX_WORKERS = 64


def make_server(
    servicer: OracleServicer,
    address: str,
    *,
    max_workers: int = MAX_WORKERS,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Build (not start) a server on ``address`` ("host:port", port 0 picks one).

    Returns the server, its health servicer (so the chief can flip it to NOT_SERVING while
    shutting down) and the bound port.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="oracle-rpc"),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],
    )
    compat.service_pb2_grpc().add_OracleServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    for name in ("", compat.oracle_service_name()):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, port


def set_not_serving(health_servicer: health.HealthServicer) -> None:
    for name in ("", compat.oracle_service_name()):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
