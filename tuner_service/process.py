"""The process contract: who a chief or worker process is, and how it talks to its parent.

Everything a process learns from outside its study file is here: keras-tuner's environment
contract (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``, plus
Kubernetes' ``JOB_COMPLETION_INDEX``), tuner-service's own ``TUNER_SERVICE_*`` variables, the
auth metadata, and the exit codes. The local runner (``tuner_service/local.py``), the pod
entrypoints, the chart and its tests all use these names, so a pod and a local process are
configured the same way. No TensorFlow or gRPC import here.
"""

from __future__ import annotations

import gc
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
# Set by `tuner-service run` for its children: the pid they must not outlive (die_with_parent).
PARENT_PID = "TUNER_SERVICE_PARENT_PID"
# "1": a worker that sees no GPU exits 2 at start-up instead of silently training on the CPU.
REQUIRE_GPU = "TUNER_SERVICE_REQUIRE_GPU"
# Seconds a worker told to stop (SIGTERM) may take to finish its current epoch before it stops
# at once and leaves its trial to the last epoch's backup (tuner_service/handover.py).
HANDOVER_SECONDS = "TUNER_SERVICE_HANDOVER_SECONDS"
# Security of the chief's gRPC ports (tuner_service/auth.py reads them; docs/security.md).
AUTH_TOKEN = "TUNER_SERVICE_AUTH_TOKEN"  # the bearer token a client sends; the chief accepts it
AUTH_TOKENS_FILE = "TUNER_SERVICE_AUTH_TOKENS_FILE"  # tokens the chief accepts, one per line
TLS_CERT = "TUNER_SERVICE_TLS_CERT"  # the chief's certificate chain (cert-manager's tls.crt)
TLS_KEY = "TUNER_SERVICE_TLS_KEY"  # ... and key (tls.key)
TLS_CA = "TUNER_SERVICE_TLS_CA"  # clients verify the chief against this CA (ca.crt)
TLS_SERVER_NAME = "TUNER_SERVICE_TLS_SERVER_NAME"  # the name clients expect in its certificate
TLS_CLIENT_CA = "TUNER_SERVICE_TLS_CLIENT_CA"  # mutual TLS: the chief requires client certificates
TLS_CLIENT_CERT = "TUNER_SERVICE_TLS_CLIENT_CERT"
TLS_CLIENT_KEY = "TUNER_SERVICE_TLS_CLIENT_KEY"
# The gRPC metadata that carries the token: ``authorization: Bearer <token>`` (keys are lower case).
AUTH_METADATA = "authorization"
AUTH_SCHEME = "Bearer "

# -- exit codes -----------------------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILED = 1  # the search (or this process's part of it) failed
EXIT_USAGE = 2  # bad input: study file, environment, model, data; a GPU required and none seen
# A worker gave up on an unreachable chief (after chief_deadline): not the worker's fault, so the
# worker Job's podFailurePolicy ignores it (the pod is replaced without using its retry budget).
EXIT_CHIEF_UNREACHABLE = 3
# A worker told to stop (SIGTERM) that handed its trial back: 128 + SIGTERM, as a process stopped
# by that signal exits. Not 0: in a Kubernetes Indexed Job a pod that exits 0 completes its index
# (never replaced) and, with the worker Job's successPolicy, would end the whole Job; the Job's
# podFailurePolicy ignores 143 instead, so a preempted worker is replaced without spending its
# retries (docs/fault-tolerance.md, "Hand-over on SIGTERM").
EXIT_HANDED_OVER = 143
EXIT_INTERRUPTED = 130  # Ctrl-C; a process stopped by signal N exits 128 + N (143 for SIGTERM)


class UsageError(Exception):
    """Bad input from the user: reported on one line, exit code 2."""


class EnvError(UsageError):
    """The process environment does not describe a valid chief or worker."""


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


def die_with_parent(environ: MutableMapping[str, str]) -> None:
    """End this process (SIGTERM) when its parent ``$TUNER_SERVICE_PARENT_PID`` dies, even by SIGKILL.

    ``tuner-service run`` sets the variable for its chief and workers; their entry point calls
    this first thing. Linux's ``PR_SET_PDEATHSIG`` delivers the signal when the parent exits; a
    parent that died before this call is seen by ``getppid()``. The variable is removed, so
    nothing this process starts inherits it. A no-op elsewhere (no prctl).
    """
    raw = environ.pop(PARENT_PID, "")
    if not raw.isdigit():
        return
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(raw):  # the parent is already gone: nobody would signal us
        os.kill(os.getpid(), signal.SIGTERM)


def one_blas_thread() -> None:
    """NumPy's (and SciPy's) OpenBLAS on one thread in this process, unless the user chose.

    For the chief: its array work is the Bayesian oracle's, on matrices a few hundred wide,
    where a second BLAS thread buys nothing; but OpenBLAS's idle worker thread spins after every
    call, and under 256 workers it took 30-40 % of a core from the RPC threads on a 2-core
    machine (docs/oracle.md). Read when OpenBLAS loads, so it must run before NumPy is imported.
    Training runs on TensorFlow's own thread pools, which this does not touch.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def freeze_startup_heap() -> None:
    """Exempt everything alive now (TensorFlow, Keras, the data, a reloaded search) from
    garbage collection; call it once start-up is over.

    A full collection walks every object TensorFlow ever allocated: 0.2-0.5 s with the GIL held
    on a 2-core node. In a worker keras-tuner forces two before every trial
    (``Tuner._try_build``, ``keras.backend.clear_session``): 1.0 s -> 0.07 s between trials
    (docs/performance.md). In the chief the automatic ones stalled every RPC in flight: 217 ms
    under 256 workers (docs/oracle.md). No ``gc.collect()`` first: it would walk that whole heap
    once more to free a few MB of import-time garbage. Frozen objects are still freed by
    reference counting; only cycles among them are kept.
    """
    gc.freeze()


def env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """A port from the environment (0 turns it off), or ``default`` when unset."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise UsageError(f"{name}={raw!r}: expected a port number (0 turns it off)")
    return int(raw)


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A yes/no setting: ``1``/``true`` on, ``0``/``false``/unset off; anything else is bad input."""
    raw = (environ.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise UsageError(f"{name}={environ.get(name)!r}: expected 1 or 0")


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
