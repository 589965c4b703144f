"""Where a running chief serves its status API and metrics, recorded in the study's directory.

The study file's ``status_port`` is not always where the chief listens (``tuner-service run``
picks a free port for a 0; a pod's environment may override it), so the chief writes
``endpoints.json`` beside ``service_state.json`` and ``tuner-service status --config`` reads it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from tuner_service.study.files import ENDPOINTS, read_json, write_json_atomic

_ANY = {"", "0.0.0.0", "::", "[::]"}


def connect_host(bind_host: str) -> str:
    """A host a local client can dial for a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in _ANY else bind_host


def write(project_dir: Path, host: str, *, status_port: int = 0, metrics_port: int = 0) -> None:
    # pid + hostname: `tuner-service list` tells a live chief from one that died without saying so.
    payload = {"pid": os.getpid(), "hostname": socket.gethostname(), "host": connect_host(host)}
    if status_port:
        payload["status"] = f"{connect_host(host)}:{status_port}"
    if metrics_port:
        payload["metrics"] = f"http://{connect_host(host)}:{metrics_port}/metrics"
    project_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(project_dir / ENDPOINTS, payload)


def read(project_dir: Path) -> dict[str, Any]:
    data = read_json(project_dir / ENDPOINTS)
    return data if isinstance(data, dict) else {}
