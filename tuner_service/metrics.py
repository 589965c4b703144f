"""Every Prometheus metric of tuner-service, defined in one place.

Each role builds its own :class:`~prometheus_client.CollectorRegistry` (no global default
registry), so a reader and a test always know which process a figure comes from:

* :class:`ChiefMetrics` — the search as the chief sees it. Counters and histograms are fed by the
  ledger's events and the Oracle servicer's RPC and decision observers; state-like gauges
  (running trials, progress, best objective, live workers, search state) are read from the
  ledger at scrape time, so they are right after a chief restart too.
* :class:`WorkerMetrics` — one worker's training figures (epochs, samples, throughput), fed by a
  Keras callback.

Every series carries a ``study`` label so several searches can share one Prometheus. Label values
are bounded: statuses, RPC method names and worker ids (``KERASTUNER_TUNER_ID``, bounded by the
job's parallelism) — never trial ids. ``docs/monitoring.md`` has the reference table.

Example (a chief's registry on a free port)::

    from tuner_service.study.ledger import Ledger
    from tuner_service.metrics import ChiefMetrics, serve

    ledger = Ledger("demo", max_trials=10)
    metrics = ChiefMetrics(ledger, objective="val_accuracy", direction="max").attach()
    server = serve(metrics.registry, port=0)      # server.port is the bound port
    ledger.trial_started("worker-0", "00")         # tuner_service_trials_started_total == 1
    server.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tuner_service.chief.servicer import OracleServicer
    from tuner_service.study.ledger import Event, Ledger

log = logging.getLogger(__name__)

PREFIX = "tuner_service"
# A worker that has not called the chief for this long is "missing" (not alive). Workers call at
# least once per epoch; the chief passes the study's ``lease_timeout`` instead, so the metric and
# the reassignment agree (this default serves callers without a study).
DEFAULT_WORKER_LEASE = 300.0
SEARCH_STATES = ("running", "finished", "failed", "interrupted")
# Ledger statuses of an ended attempt → label values (lower-case, bounded).
ENDED_STATUS = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "RETRY": "retried",  # INVALID with retries left: sent back to the queue
    "INVALID": "invalid",
    "STOPPED": "stopped",
}

# Trials last seconds (a tiny test) to hours (a CNN on full data on a CPU).
TRIAL_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200)
EPOCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Chief RPCs and oracle decisions: sub-millisecond to seconds (stock Bayesian optimization).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _name(suffix: str) -> str:
    return f"{PREFIX}_{suffix}"


class ChiefMetrics:
    """The chief's registry: subscribe it to a ledger (and a servicer) and serve it."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        objective: str = "",
        direction: str = "",
        tuner: str = "",
        model: str = "",
        lease_seconds: float = DEFAULT_WORKER_LEASE,
        clock: Callable[[], float] = time.time,
    ):
        self.ledger = ledger
        self.study = ledger.name
        self.registry = CollectorRegistry(auto_describe=True)
        # trial id → (time of its start or last new step, last step reported); running trials only
        self._marks: dict[str, tuple[float, int]] = {}
        self._marks_lock = threading.Lock()
        study = ["study"]
        r = self.registry
        self.trials_started = Counter(
            _name("trials_started"),
            "Trial attempts handed to workers (retries and reassigned trials count again).",
            study,
            registry=r,
        )
        self.trials_ended = Counter(
            _name("trials_ended"),
            "Trial attempts that ended, by status: completed, failed, retried (INVALID, sent back"
            " for a retry), invalid, stopped.",
            ["study", "status"],
            registry=r,
        )
        self.trials_reassigned = Counter(
            _name("trials_reassigned"),
            "Running trials taken from a worker that went silent past its lease and queued again.",
            study,
            registry=r,
        )
        self.epochs = Counter(
            _name("epochs"),
            "Epochs workers reported done (a report at step k covers epochs 0..k; repeats count once).",
            study,
            registry=r,
        )
        self.trial_duration = Histogram(
            _name("trial_duration_seconds"),
            "Wall time of a trial attempt, from hand-out to end, by status.",
            ["study", "status"],
            buckets=TRIAL_BUCKETS,
            registry=r,
        )
        self.epoch_duration = Histogram(
            _name("epoch_duration_seconds"),
            "Time per epoch between a trial's reports of new steps, as the chief sees them (the"
            " first includes building the model).",
            study,
            buckets=EPOCH_BUCKETS,
            registry=r,
        )
        self.rpc_duration = Histogram(
            _name("rpc_duration_seconds"),
            "Latency of the chief's keras-tuner Oracle RPCs, by method and gRPC status code.",
            ["study", "method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_duration = Histogram(
            _name("oracle_decision_duration_seconds"),
            "Time the oracle takes to decide, by operation: create_trial (propose), end_trial.",
            ["study", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Series that exist from the start, so rates and ratios are 0 rather than absent.
        self.trials_started.labels(self.study)
        self.trials_reassigned.labels(self.study)
        self.epochs.labels(self.study)
        for status in ("completed", "failed", "retried"):
            self.trials_ended.labels(self.study, status)
        r.register(
            _LedgerCollector(
                ledger,
                info={"objective": objective, "direction": direction, "tuner": tuner, "model": model},
                lease_seconds=lease_seconds,
                clock=clock,
            )
        )

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, servicer: OracleServicer | None = None) -> ChiefMetrics:
        """Subscribe to the ledger's events and, if given, the servicer's observers."""
        self.ledger.subscribe(self.on_event)
        if servicer is not None:
            servicer.rpc_observers.append(self.on_rpc)
            servicer.decision_observers.append(self.on_decision)
        return self

    # -- observers ---------------------------------------------------------------------------
    def on_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_duration.labels(self.study, method, code).observe(seconds)

    def on_decision(self, operation: str, seconds: float) -> None:
        self.decision_duration.labels(self.study, operation).observe(seconds)

    def on_event(self, event: Event) -> None:
        handler = _EVENT_HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    def _started(self, event: Event) -> None:
        self.trials_started.labels(self.study).inc()
        with self._marks_lock:  # a reassigned trial resumes after its last reported step
            _, done = self._marks.get(event.trial_id or "", (0.0, -1))
            self._marks[event.trial_id or ""] = (event.time, done)

    def _reported(self, event: Event) -> None:
        # A report at step k means epochs 0..k are done. keras-tuner re-reports its best step
        # when a trial ends (and stock workers report nothing else), so count only new steps
        # and spread the time since the last new step over them.
        step = int(event.data.get("step") or 0)
        with self._marks_lock:
            since, done = self._marks.get(event.trial_id or "", (event.time, -1))
            new = step - done
            if new > 0:
                self._marks[event.trial_id or ""] = (event.time, step)
        if new > 0:
            self.epochs.labels(self.study).inc(new)
            per_epoch = max(0.0, event.time - since) / new
            for _ in range(new):
                self.epoch_duration.labels(self.study).observe(per_epoch)

    def _ended(self, event: Event) -> None:
        status = ENDED_STATUS.get(str(event.data.get("status")), "other")
        self.trials_ended.labels(self.study, status).inc()
        duration = event.data.get("duration")
        if duration is not None:
            self.trial_duration.labels(self.study, status).observe(max(0.0, float(duration)))
        self._unmark(event.trial_id)

    def _reassigned(self, event: Event) -> None:
        self.trials_reassigned.labels(self.study).inc()  # its mark stays: the next holder resumes

    def _unmark(self, trial_id: str | None) -> None:
        with self._marks_lock:
            self._marks.pop(trial_id or "", None)


_EVENT_HANDLERS: dict[str, Callable[[ChiefMetrics, Event], None]] = {
    "trial_started": ChiefMetrics._started,
    "trial_reported": ChiefMetrics._reported,
    "trial_ended": ChiefMetrics._ended,
    "trial_reassigned": ChiefMetrics._reassigned,
}


class _LedgerCollector(Collector):
    """Gauges read from the ledger at scrape time: the ledger is the truth, events are deltas."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        info: dict[str, str],
        lease_seconds: float,
        clock: Callable[[], float],
    ):
        self.ledger = ledger
        self.info = info
        self.lease = lease_seconds
        self.clock = clock
        self.started_at = clock()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: its series depend on the ledger

    def collect(self) -> Iterator[Metric]:
        snap = self.ledger.snapshot()
        study = snap["name"]
        now = self.clock()
        trials = snap["trials"].values()
        workers = snap["workers"]

        def gauge(suffix: str, doc: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                family = GaugeMetricFamily(_name(suffix), doc, labels=["study"])
                family.add_metric([study], value)
                yield family

        info = InfoMetricFamily(
            _name("study"), "The study's settings (value 1).", labels=["study", *self.info]
        )
        info.add_metric([study, *self.info.values()], {})
        yield info

        state = GaugeMetricFamily(
            _name("search_state"),
            "1 for the search's current state (running, finished, failed, interrupted), else 0.",
            labels=["study", "state"],
        )
        for name in SEARCH_STATES:
            state.add_metric([study, name], 1.0 if snap["state"] == name else 0.0)
        yield state

        running = GaugeMetricFamily(
            _name("trials_running"),
            "Trials being trained now, by worker (0 for a known worker with none).",
            labels=["study", "worker"],
        )
        per_worker = dict.fromkeys(workers, 0)
        for trial in trials:
            if trial["status"] == "RUNNING":
                per_worker[trial["tuner_id"]] = per_worker.get(trial["tuner_id"], 0) + 1
        for worker, count in sorted(per_worker.items()):
            running.add_metric([study, worker], count)
        yield running

        completed = [t for t in trials if t["status"] == "COMPLETED"]
        yield from gauge(
            "trials_completed",
            "Completed trials of the study (from the chief's ledger; survives chief restarts).",
            len(completed),
        )
        yield from gauge(
            "trials_max",
            "The search's trial budget: max_trials, or the trials Hyperband's brackets plan.",
            snap["max_trials"],
        )
        yield from gauge(
            "best_objective", "The objective of the best completed trial so far.", snap["best_score"]
        )
        scored = [t for t in completed if t.get("score") is not None and t.get("ended_at")]
        last = max(scored, key=lambda t: t["ended_at"]) if scored else None
        yield from gauge(
            "last_objective",
            "The objective of the most recently completed trial.",
            None if last is None else last["score"],
        )
        last_end = max((t["ended_at"] for t in completed if t.get("ended_at")), default=0.0)
        yield from gauge(
            "last_progress_timestamp_seconds",
            "Unix time of the last completed trial, or of this chief's start if that is later.",
            max(self.started_at, last_end),
        )
        active = [w for w in workers.values() if w["state"] not in ("done", "stopped")]
        alive = sum(1 for w in active if now - w["last_seen"] <= self.lease)
        yield from gauge(
            "workers_alive",
            "Workers (not yet told STOPPED) that called the chief within the lease.",
            alive,
        )
        yield from gauge(
            "workers_missing",
            "Workers (not yet told STOPPED) silent for longer than the lease.",
            len(active) - alive,
        )
        yield from gauge(
            "worker_lease_seconds", "Silence after which a worker counts as missing.", self.lease
        )


class WorkerMetrics:
    """One worker's registry: training throughput and epochs, fed by :meth:`callback`.

    ``samples_per_epoch`` is the training set's size; the worker sets it once its data is loaded.
    """

    def __init__(self, study: str, worker: str, samples_per_epoch: int = 0):
        self.study, self.worker = study, worker
        self.samples_per_epoch = samples_per_epoch
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["study", "worker"]
        r = self.registry
        self.epochs = Counter(_name("worker_epochs"), "Epochs this worker trained.", labels, registry=r)
        self.samples = Counter(
            _name("worker_samples"),
            "Training samples this worker processed (rate() is its throughput).",
            labels,
            registry=r,
        )
        self.throughput = Gauge(
            _name("worker_samples_per_second"),
            "Training throughput of the last epoch (samples / training seconds, validation excluded).",
            labels,
            registry=r,
        )
        self.epoch_duration = Histogram(
            _name("worker_epoch_duration_seconds"),
            "Training time of an epoch on this worker (validation excluded).",
            labels,
            buckets=EPOCH_BUCKETS,
            registry=r,
        )
        for metric in (self.epochs, self.samples):
            metric.labels(study, worker)

    def epoch_trained(self, seconds: float, samples: int | None = None) -> None:
        samples = self.samples_per_epoch if samples is None else samples
        key = (self.study, self.worker)
        self.epochs.labels(*key).inc()
        self.samples.labels(*key).inc(samples)
        self.epoch_duration.labels(*key).observe(seconds)
        if seconds > 0:
            self.throughput.labels(*key).set(samples / seconds)

    def callback(self) -> Any:
        """A Keras callback that times each epoch's training part and records it here."""
        return _make_callback(self)


def _make_callback(metrics: WorkerMetrics) -> Any:
    import keras  # lazy: the chief and the CLI never import Keras for metrics

    class ThroughputCallback(keras.callbacks.Callback):
        """Epoch begin → validation begin (or epoch end) is the training time of the epoch."""

        def __init__(self) -> None:
            super().__init__()
            self._begin: float | None = None
            self._train_end: float | None = None

        def __deepcopy__(self, memo: dict) -> ThroughputCallback:
            # keras-tuner deep-copies callbacks per execution; the registry must stay shared.
            return self

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._begin, self._train_end = time.perf_counter(), None

        def on_test_begin(self, logs: dict | None = None) -> None:
            if self._begin is not None and self._train_end is None:
                self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if self._begin is None:
                return
            end = self._train_end or time.perf_counter()
            metrics.epoch_trained(end - self._begin)
            self._begin = None

    return ThroughputCallback()


class MetricsServer:
    """A registry served over HTTP on ``/metrics`` from a daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread):
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` on ``addr:port`` (0 picks a free port); OSError if it cannot bind."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_address[1])
    return MetricsServer(server, thread)
