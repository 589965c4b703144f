"""The chief's Oracle server: keras-tuner's Oracle service plus standard health checking.

Built by the shared factory (:mod:`tuner_service.grpc_server`), like the status server, so both
ports get the same auth and TLS.
"""

from __future__ import annotations

from tuner_service import compat
from tuner_service.auth import ServerSecurity
from tuner_service.chief.servicer import OracleServicer
from tuner_service.grpc_server import BuiltServer, make_grpc_server

# Enough threads that 256 workers' short calls never queue behind one another for long; the
# oracle itself serialises state changes with keras-tuner's own lock.
MAX_WORKERS = 64


def make_server(
    servicer: OracleServicer,
    address: str,
    *,
    security: ServerSecurity | None = None,
    max_workers: int = MAX_WORKERS,
) -> BuiltServer:
    """Build (not start) a server on ``address`` ("host:port", port 0 picks one).

    The result holds the server, the bound port and the health service (the chief flips it to
    NOT_SERVING while shutting down).
    """
    return make_grpc_server(
        address,
        lambda server: compat.service_pb2_grpc().add_OracleServicer_to_server(servicer, server),
        services=(compat.oracle_service_name(),),
        security=security or ServerSecurity(),
        max_workers=max_workers,
        thread_name_prefix="oracle-rpc",
    )
