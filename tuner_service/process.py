"""The process contract: who a chief or worker process is, and how it talks to its parent.

Everything a process learns from outside its study file is here: keras-tuner's environment
contract (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``, plus
Kubernetes' ``JOB_COMPLETION_INDEX``), tuner-service's own ``TUNER_SERVICE_*`` variables, the
auth metadata, and the exit codes. The local runner (``tuner_service/local.py``), the pod
entrypoints, the chart and its tests all use these names, so a pod and a local process are
configured the same way. No TensorFlow or gRPC import here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

# -- keras-tuner's environment contract ---------------------------------------------------
TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
JOB_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes on the pods of an Indexed Job

# -- tuner-service's own variables --------------------------------------------------------
METRICS_PORT = "TUNER_SERVICE_METRICS_PORT"  # the process's /metrics port (0: off)
STATUS_PORT = "TUNER_SERVICE_STATUS_PORT"  # the chief's status API port (0: off)
# Seconds a chief or worker keeps serving /metrics after its work, so a last scrape sees final values.
METRICS_LINGER = "TUNER_SERVICE_METRICS_LINGER"
# The study lock (tuner_service/study/lock.py): seconds without a heartbeat after which a chief's
# lock is taken over, and seconds between its heartbeats. Tests shorten them.
LOCK_STALE = "TUNER_SERVICE_LOCK_STALE"
LOCK_HEARTBEAT = "TUNER_SERVICE_LOCK_HEARTBEAT"
AUTH_TOKEN = "TUNER_SERVICE_AUTH_TOKEN"  # bearer token for the chief's gRPC ports
# The gRPC metadata that carries it: ``authorization: Bearer <token>``.
AUTH_METADATA = "authorization"
AUTH_SCHEME = "Bearer"

# -- exit codes -----------------------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILED = 1  # the search (or this process's part of it) failed
EXIT_USAGE = 2  # bad input: study file, environment, model, data
EXIT_INTERRUPTED = 130  # Ctrl-C; a process stopped by signal N exits 128 + N (143 for SIGTERM)


class UsageError(Exception):
    """Bad input from the user: reported on one line, exit code 2."""


class EnvError(UsageError):
    """The process environment does not describe a valid chief or worker."""


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none without a token)."""
    return ((AUTH_METADATA, f"{AUTH_SCHEME} {token}"),) if token else ()


@dataclass(frozen=True)
class Role:
    """Who this process is, read only from keras-tuner's environment contract."""

    tuner_id: str
    oracle_ip: str
    oracle_port: int

    @property
    def address(self) -> str:
        return f"{self.oracle_ip}:{self.oracle_port}"

    @property
    def is_chief(self) -> bool:
        return "chief" in self.tuner_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, chief: bool) -> Role:
        problems = []
        tuner_id = environ.get(TUNER_ID)
        if not tuner_id and not chief and environ.get(JOB_INDEX, "").isdigit():
            tuner_id = f"worker-{environ[JOB_INDEX]}"
        if chief:
            tuner_id = tuner_id or "chief"
            if "chief" not in tuner_id:
                problems.append(f"{TUNER_ID}={tuner_id!r}: a chief's id must contain 'chief'")
        elif not tuner_id:
            problems.append(f"{TUNER_ID} (or {JOB_INDEX}) is not set")
        elif "chief" in tuner_id:
            problems.append(f"{TUNER_ID}={tuner_id!r}: a worker's id must not contain 'chief'")
        ip = environ.get(ORACLE_IP) or ("0.0.0.0" if chief else "")
        if not ip:
            problems.append(f"{ORACLE_IP} is not set (the chief's address)")
        port = environ.get(ORACLE_PORT, "")
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"{ORACLE_PORT}={port!r}: expected a TCP port number")
        if problems:
            raise EnvError("; ".join(problems))
        return cls(str(tuner_id), ip, int(port))

    def env(self) -> dict[str, str]:
        """The contract's variables for this role (what a parent gives its child)."""
        return {TUNER_ID: self.tuner_id, ORACLE_IP: self.oracle_ip, ORACLE_PORT: str(self.oracle_port)}

    def export(self, environ: MutableMapping[str, str] | None = None) -> None:
        """keras-tuner's Tuner reads the contract from os.environ; make it complete."""
        (os.environ if environ is None else environ).update(self.env())


def env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """A port from the environment (0 turns it off), or ``default`` when unset."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise UsageError(f"{name}={raw!r}: expected a port number (0 turns it off)")
    return int(raw)


def env_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """Seconds (0-3600) from the environment, or ``default`` when unset."""
    raw = environ.get(name) or ""
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise UsageError(f"{name}={raw!r}: expected seconds between 0 and 3600")
    return value
