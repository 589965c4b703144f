"""The chief process, assembled: ``run_chief(spec, environ) -> exit code``.

What ``tuner-service chief`` (a pod's entrypoint, or a process of ``tuner-service run``) does,
in order: read its role and ports from the environment (bad settings fail before TensorFlow
loads), build the same keras-tuner tuner as the workers (which declares the search space and,
on storage that already holds a search, reloads it: a restarted chief resumes), serve the
oracle with its metrics and status API beside it until the search is over, then retrain the
best trial and write ``results.json``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner_service import process
from tuner_service.process import UsageError
from tuner_service.spec import StudySpec
from tuner_service.study import endpoints, files

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

    @classmethod
    def from_env(cls, spec: StudySpec, environ: Mapping[str, str]) -> ChiefSettings:
        return cls(
            role=process.Role.from_env(environ, chief=True),
            metrics_port=process.env_port(environ, process.METRICS_PORT, spec.metrics_port),
            status_port=process.env_port(environ, process.STATUS_PORT, spec.status_port),
            linger=process.env_seconds(environ, process.METRICS_LINGER, 0.0),
        )


def run_chief(spec: StudySpec, environ: Mapping[str, str]) -> int:
    """Serve the study's search until it is over; the process's exit code."""
    settings = ChiefSettings.from_env(spec, environ)  # before TensorFlow loads
    from tuner_service import data

    # Bad data: one line, exit 2, nothing written; files before TensorFlow loads, the rest below.
    data.check(spec.data, spec.seed, call_function=False)
    from tuner_service import compat, compute
    from tuner_service.chief.chief import Chief
    from tuner_service.models import load_hypermodel
    from tuner_service.tuners import build_tuner

    compat.check_version()
    compat.install_atomic_json()  # a chief killed mid-write must not leave a corrupt oracle.json
    settings.role.export()
    compute.configure_devices(spec.compute)  # the final retrain trains as the trials did
    splits = data.load(spec.data, spec.seed, spec.batch_size)  # what check() could not see: exit 2
    hypermodel = compute.for_study(load_hypermodel(spec.model, splits.task), spec.compute)
    resumed = (spec.project_dir / files.ORACLE).exists()
    tuner = build_tuner(spec, hypermodel)
    tuner.save()
    chief = Chief(spec, tuner.oracle, address=settings.role.address)
    with ExitStack() as stack:  # metrics and status stay up until the chief exits
        serve_observability(spec, chief, settings, stack)
        return _serve(spec, chief, tuner, resumed, splits)


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
            ).start()
            stack.callback(status.close)
            bound["status_port"] = status.port
    except OSError as err:
        raise UsageError(f"cannot serve metrics or status on {host} ({err})") from None
    endpoints.write(spec.project_dir, host, **bound)
    if settings.linger and settings.metrics_port:
        stack.callback(time.sleep, settings.linger)  # runs first on exit: both servers still answer


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
