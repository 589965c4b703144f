"""TCP ports of a chief: pick a free one, or check that the ones asked for are free.

Checked before TensorFlow loads (seconds earlier than the servers bind), so a busy port is a
one-line error that names it, with nothing written to the study directory. The check binds the
way the servers do: ``SO_REUSEADDR`` (Python's HTTP server, gRPC), so a port that only has
connections in TIME_WAIT from a previous run counts as free, and one with a listener as busy.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from tuner_service.process import UsageError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def busy(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now, or None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen()
        except OSError as err:
            return err.strerror or str(err)
    return None


def check_free(host: str, ports: Mapping[str, int], hint: str = "") -> None:
    """Raise :class:`UsageError` naming every port of ``ports`` (its name -> number; 0 = none) in use."""
    problems = []
    for what, port in ports.items():
        reason = busy(host, port) if port else None
        if reason:
            problems.append(f"{what} {port} on {host} is busy ({reason})")
    if problems:
        raise UsageError("; ".join(problems) + (f"; {hint}" if hint else ""))
