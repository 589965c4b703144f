"""The chief process, assembled: ``run_chief(spec, environ) -> exit code``.

What ``tuner-service chief`` (a pod's entrypoint, or a process of ``tuner-service run``) does,
in order: read its role and ports from the environment, check that the study directory can be
written and take its lock (one chief per study: :mod:`tuner_service.study.lock`), all before
TensorFlow loads; check that the saved state can be read back; build the same keras-tuner tuner
as the workers (which declares the search space and, on storage that already holds a search,
reloads it: a restarted chief resumes), serve the oracle with its metrics and status API beside
it until the search is over, then retrain the best trial and write ``results.json``. A search
that was already over (a chief killed during the final retrain) is finalized without workers.

Every way this can end is one line on stderr and an exit code: 0 done, 1 the search failed or
could not go on (no worker within ``worker_deadline``, another chief took over, the state cannot
be written), 2 bad input (a second chief on the study, an unusable directory or saved state),
128 + N on signal N.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner_service import process
from tuner_service.auth import ServerSecurity
from tuner_service.process import UsageError
from tuner_service.spec import StudySpec
from tuner_service.study import endpoints, files
from tuner_service.study.integrity import StudyStateError, check_directory, check_saved_state
from tuner_service.study.lock import LockLost, StudyLock

if TYPE_CHECKING:
    from tuner_service.chief.chief import Chief

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChiefSettings:
    """What the chief reads from its environment besides the study file."""

    role: process.Role
    metrics_port: int
    status_port: int
    linger: float  # seconds /metrics keeps answering after the search, for a last scrape
    security: ServerSecurity  # token auth and TLS of both gRPC ports

    @classmethod
    def from_env(cls, spec: StudySpec, environ: Mapping[str, str]) -> ChiefSettings:
        return cls(
            role=process.Role.from_env(environ, chief=True),
            metrics_port=process.env_port(environ, process.METRICS_PORT, spec.metrics_port),
            status_port=process.env_port(environ, process.STATUS_PORT, spec.status_port),
            linger=process.env_seconds(environ, process.METRICS_LINGER, 0.0),
            security=ServerSecurity.from_env(environ),
        )

    def check_ports(self) -> None:
        from tuner_service.ports import check_free

        named = {"metrics_port": self.metrics_port, "status_port": self.status_port}
        check_free(self.role.oracle_ip, {process.ORACLE_PORT: self.role.oracle_port, **named})


def study_lock(spec: StudySpec, environ: Mapping[str, str]) -> StudyLock:
    stale = process.env_seconds(environ, process.LOCK_STALE, 30.0)
    heartbeat = process.env_seconds(environ, process.LOCK_HEARTBEAT, min(5.0, stale / 3))
    if not 0 < heartbeat < stale:
        raise UsageError(
            f"{process.LOCK_HEARTBEAT}={heartbeat:g} must be above 0 and below {process.LOCK_STALE}"
        )
    return StudyLock(spec.project_dir, stale_after=stale, heartbeat=heartbeat)


def run_chief(spec: StudySpec, environ: Mapping[str, str]) -> int:
    """Serve the study's search until it is over; the process's exit code."""
    settings = ChiefSettings.from_env(spec, environ)  # before TensorFlow loads
    settings.check_ports()  # a busy port: one line naming it, nothing written
    process.one_blas_thread()  # before NumPy loads
    from tuner_service import data

    # Bad data: one line, exit 2, nothing written; files before TensorFlow loads, the rest below.
    data.check(spec.data, spec.seed, call_function=False)
    check_directory(spec.project_dir)  # before anything is written there
    lock = study_lock(spec, environ)
    lock.acquire()  # a second chief exits 2 here, in a second, naming the holder
    lock.start_heartbeat()
    try:
        return _run_locked(spec, settings, lock)
    except LockLost as err:
        print(f"chief: stopped without writing: {err}", file=sys.stderr)
        return process.EXIT_FAILED
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        print(f"chief: {_cannot_write(spec, err)}", file=sys.stderr)
        return process.EXIT_FAILED
    finally:
        lock.release()


# A full or read-only volume, a quota, lost permissions, an I/O error, a vanished directory.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT}


def _cannot_write(spec: StudySpec, err: object) -> str:
    return (
        f"cannot write the study's state in {spec.project_dir}: {err}. Free space or make the volume "
        "writable, then start the chief again: it resumes from the last state saved"
    )


def _run_locked(spec: StudySpec, settings: ChiefSettings, lock: StudyLock) -> int:
    check_saved_state(spec.project_dir, settings.role.tuner_id)
    from tuner_service import compat, compute, data
    from tuner_service.chief.chief import Chief
    from tuner_service.models import load_hypermodel
    from tuner_service.study.ledger import CorruptStateError
    from tuner_service.tuners import build_tuner

    compat.check_version()
    compat.install_atomic_json()  # a chief killed mid-write must not leave a corrupt oracle.json
    settings.role.export()
    compute.configure_devices(spec.compute)  # the final retrain trains as the trials did
    splits = data.load(spec.data, spec.seed, spec.batch_size)  # what check() could not see: exit 2
    hypermodel = compute.for_study(load_hypermodel(spec.model, splits.task), spec.compute)
    resumed = (spec.project_dir / files.ORACLE).exists()
    try:
        tuner = build_tuner(spec, hypermodel)
        tuner.save()
        chief = Chief(
            spec, tuner.oracle, address=settings.role.address, lock=lock, security=settings.security
        )
    except (CorruptStateError, KeyError, ValueError, TypeError, RuntimeError) as err:
        if not resumed:
            raise
        # What the file checks could not see (e.g. valid JSON that keras-tuner cannot load).
        raise StudyStateError(
            f"cannot reload the search saved in {spec.project_dir} ({type(err).__name__}: {err}): restore "
            f"its files from a backup, or move it away to start the study over"
        ) from None
    if chief.search_over():
        return _finalize_alone(spec, chief, tuner, splits)
    process.freeze_startup_heap()  # no collection walks TensorFlow's heap while RPCs wait
    with ExitStack() as stack:  # metrics and status stay up until the chief exits
        serve_observability(spec, chief, settings, stack)
        return _serve(spec, chief, tuner, resumed, splits)


def _finalize_alone(spec: StudySpec, chief: Chief, tuner: Any, splits: Any) -> int:
    """The search ended before this chief started: finish it without waiting for workers."""
    from tuner_service.results import finalize

    chief.server.stop(None)
    saved = files.read_json(spec.project_dir / files.RESULTS)
    if isinstance(saved, dict) and saved.get("state") == "finished":
        # Nothing is rewritten: the ledger keeps its workers and times as the search left them.
        chief.writer.close(write=False)
        log.info("the search in %s is over and its results are written: nothing to do", spec.project_dir)
        return process.EXIT_OK if saved.get("trials_completed") else process.EXIT_FAILED
    log.info(
        "the search in %s is over but has no results yet (its chief stopped before writing them): "
        "finishing it without workers",
        spec.project_dir,
    )
    chief.writer.close()
    if (files.read_json(spec.project_dir / files.STATE) or {}).get("state") != "finished":
        chief.ledger.set_state("finished")  # every trial had ended, but its chief died before saying so
        chief.ledger.close()
    results = finalize(spec, tuner, "finished", splits)
    log.info("results: %s", spec.project_dir / files.RESULTS)
    return process.EXIT_OK if results.get("trials_completed") else process.EXIT_FAILED


def serve_observability(spec: StudySpec, chief: Chief, settings: ChiefSettings, stack: ExitStack) -> None:
    """Start the chief's /metrics and status servers (port 0 = off); stop them when ``stack`` closes."""
    from tuner_service.metrics import ChiefMetrics, serve
    from tuner_service.status.server import make_status_server

    host = settings.role.oracle_ip
    direction = chief.oracle.objective.direction
    bound = {"metrics_port": 0, "status_port": 0}
    try:
        if settings.metrics_port:
            metrics = ChiefMetrics(
                chief.ledger,
                objective=spec.objective,
                direction=direction,
                tuner=spec.tuner.type,
                model=spec.model,
                lease_seconds=spec.lease_timeout,  # "missing" agrees with reassignment
            ).attach(chief.servicer)
            server = serve(metrics.registry, settings.metrics_port, host)
            stack.callback(server.close)
            bound["metrics_port"] = server.port
        if settings.status_port:
            status = make_status_server(
                chief.ledger,
                f"{host}:{settings.status_port}",
                objective=spec.objective,
                direction=direction,
                history_path=spec.project_dir / files.HISTORY,
                security=chief.security,  # the oracle port's auth and TLS
            ).start()
            stack.callback(status.close)
            bound["status_port"] = status.port
    except OSError as err:
        raise UsageError(f"cannot serve metrics or status on {host} ({err})") from None
    endpoints.write(spec.project_dir, host, **bound)
    if settings.linger and settings.metrics_port:
        stack.callback(_linger, chief, settings.linger)  # runs first on exit: both servers still answer


def _linger(chief: Chief, seconds: float) -> None:
    """Keep /metrics up for a last scrape, unless a signal stopped the chief: then exit at once
    (SIGTERM comes with a grace period, and a last scrape of an interrupted search adds nothing)."""
    if chief.stop_signal is None:
        time.sleep(seconds)


def _serve(spec: StudySpec, chief: Chief, tuner: Any, resumed: bool, splits: Any) -> int:
    from tuner_service import kube
    from tuner_service.results import finalize

    chief.install_signal_handlers()
    # Kubernetes Events (`kubectl describe pod`, `kubectl get events`); a no-op outside a pod.
    reason = kube.SEARCH_RESUMED if resumed else kube.SEARCH_STARTED
    kube.publish_event(reason, f"study {spec.name}: {spec.tuner.type} search, {spec.max_trials} trials")
    outcome = chief.serve()
    log.info("search %s %s", outcome.state, outcome.message)
    if outcome.state == "interrupted":
        # The shell convention, 128 + signal: 143 for Kubernetes' SIGTERM, 130 for Ctrl-C.
        return 128 + chief.stop_signal if chief.stop_signal else process.EXIT_INTERRUPTED
    if outcome.state in ("stalled", "fenced", "unwritable"):
        kube.publish_event(kube.SEARCH_FAILED, f"study {spec.name}: {outcome.message}", event_type="Warning")
        message = {
            "stalled": f"gave up: {outcome.message}",
            "fenced": f"stopped without writing: {outcome.message}",
            "unwritable": _cannot_write(spec, outcome.message),
        }[outcome.state]
        print(f"chief: {message}", file=sys.stderr)
        return process.EXIT_FAILED
    if outcome.state == "failed":
        kube.publish_event(kube.SEARCH_FAILED, f"study {spec.name}: {outcome.message}", event_type="Warning")
    results = finalize(spec, tuner, outcome.state, splits)
    log.info("results: %s", spec.project_dir / files.RESULTS)
    if outcome.state == "failed":
        print(f"search failed: {outcome.message}", file=sys.stderr)
        return process.EXIT_FAILED
    summary = f"best {spec.objective} {results.get('best_val_score')}, test {results.get('test_metrics')}"
    kube.publish_event(kube.SEARCH_FINISHED, f"study {spec.name}: {summary}")
    return process.EXIT_OK if results.get("trials_completed") else process.EXIT_FAILED
