"""The one gRPC server factory of the chief's ports (the Oracle service and the status API).

Both servers are built here so that what protects one protects the other: the same thread pool
shape, options, standard health service, port binding, TLS or plaintext port, and bearer-token
interceptor (:mod:`tuner_service.auth`). The health service answers without a token (kubelet
probes cannot send one); every other call needs one when auth is on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tuner_service.auth import ServerSecurity

# SO_REUSEPORT off: a second chief on the same port must fail to bind, not share the port.
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


@dataclass
class BuiltServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    services: tuple[str, ...]  # the health service names, "" included

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.services:
            self.health.set(name, status)


def make_grpc_server(
    address: str,
    register: Callable[[grpc.Server], None],
    *,
    services: Sequence[str],
    security: ServerSecurity,
    max_workers: int,
    thread_name_prefix: str,
) -> BuiltServer:
    """Build (not start) a server on ``address`` ("host:port", port 0 picks one).

    ``register(server)`` adds the servicers; ``services`` are the names the health service
    reports SERVING for (besides "", the whole server). Raises OSError when the port is taken.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix),
        interceptors=security.interceptors,
        options=SERVER_OPTIONS,
    )
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if security.tls is not None:
        port = server.add_secure_port(address, security.tls.server_credentials())
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    built = BuiltServer(server, health_servicer, port, ("", *services))
    built.set_serving(True)
    return built
