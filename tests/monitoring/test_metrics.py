"""The chief's and the worker's metrics: names, labels, values from ledger events, a real scrape."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ALERTS, DASHBOARD, metric_names, require_tool, scrape
from tuner_service.metrics import ChiefMetrics, WorkerMetrics, serve
from tuner_service.study.ledger import Event, Ledger

BETTER = lambda a, b: a > b  # noqa: E731


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: ChiefMetrics | WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: ChiefMetrics | WorkerMetrics, name: str, **labels: str) -> float | None:
    for (n, lbls), v in samples(metrics).items():
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items()):
            return v
    return None


def test_chief_metrics_follow_the_ledger() -> None:
    ledger = Ledger("demo", max_trials=4)
    metrics = ChiefMetrics(ledger, objective="val_accuracy", direction="max").attach()
    ledger.trial_started("worker-0", "00")
    ledger.trial_started("worker-1", "01")
    ledger.trial_reported("00", 0, {"val_accuracy": 0.5})
    ledger.trial_reported("00", 1, {"val_accuracy": 0.7})
    ledger.trial_reported("00", 1, {"val_accuracy": 0.7})  # keras-tuner re-reports the best step
    ledger.trial_ended("00", "COMPLETED", 0.7, BETTER)
    ledger.trial_ended("01", "RETRY", None, BETTER, "NaN loss")
    ledger.trial_started("worker-1", "01")
    ledger.trial_ended("01", "FAILED", None, BETTER, "NaN loss")
    ledger.trial_started("worker-0", "02")
    ledger._emit(Event("trial_reassigned", time.time(), "worker-0", "02", {"reason": "lease expired"}))

    assert value(metrics, "tuner_service_trials_started_total", study="demo") == 4
    assert value(metrics, "tuner_service_trials_ended_total", status="completed") == 1
    assert value(metrics, "tuner_service_trials_ended_total", status="retried") == 1
    assert value(metrics, "tuner_service_trials_ended_total", status="failed") == 1
    assert value(metrics, "tuner_service_trials_reassigned_total") == 1
    assert value(metrics, "tuner_service_epochs_total") == 2  # steps 0 and 1, not 3 reports
    assert value(metrics, "tuner_service_epoch_duration_seconds_count") == 2
    assert value(metrics, "tuner_service_trial_duration_seconds_count", status="completed") == 1
    assert value(metrics, "tuner_service_trials_completed") == 1
    assert value(metrics, "tuner_service_trials_max") == 4
    assert value(metrics, "tuner_service_best_objective") == pytest.approx(0.7)
    assert value(metrics, "tuner_service_last_objective") == pytest.approx(0.7)
    assert value(metrics, "tuner_service_trials_running", worker="worker-0") == 1
    assert value(metrics, "tuner_service_trials_running", worker="worker-1") == 0
    assert value(metrics, "tuner_service_search_state", state="running") == 1
    ledger.set_state("finished")
    assert value(metrics, "tuner_service_search_state", state="running") == 0
    assert value(metrics, "tuner_service_search_state", state="finished") == 1
    assert value(metrics, "tuner_service_study_info", objective="val_accuracy", direction="max") == 1


def test_every_series_has_a_study_label_and_no_trial_ids() -> None:
    ledger = Ledger("demo", max_trials=4)
    metrics = ChiefMetrics(ledger).attach()
    for i in range(3):
        ledger.trial_started(f"worker-{i}", f"trial-{i:04d}")
        ledger.trial_ended(f"trial-{i:04d}", "COMPLETED", 0.1 * i, BETTER)
    metrics.on_rpc("CreateTrial", "OK", 0.01)
    metrics.on_decision("create_trial", 0.001)
    for name, labels in samples(metrics):
        assert dict(labels).get("study") == "demo", name
        assert not any("trial-" in v for _, v in labels), (name, labels)


def test_the_chief_best_and_last_objective_follow_the_direction() -> None:
    ledger = Ledger("demo", max_trials=4)
    metrics = ChiefMetrics(ledger).attach()
    lower = lambda a, b: a < b  # noqa: E731
    for tid, score in (("0", 0.9), ("1", 0.3), ("2", 0.5)):
        ledger.trial_started("w", tid)
        ledger.trial_ended(tid, "COMPLETED", score, lower)
    assert value(metrics, "tuner_service_best_objective") == pytest.approx(0.3)
    assert value(metrics, "tuner_service_last_objective") == pytest.approx(0.5)


def test_workers_past_the_lease_count_as_missing_and_done_ones_not_at_all() -> None:
    clock = Clock()
    ledger = Ledger("demo", max_trials=4)
    metrics = ChiefMetrics(ledger, lease_seconds=60, clock=clock).attach()
    for worker in ("worker-0", "worker-1", "worker-2"):
        ledger.worker_seen(worker, "waiting")
    ledger.worker_seen("worker-2", "done")
    clock.now = time.time() + 30
    assert value(metrics, "tuner_service_workers_alive") == 2
    assert value(metrics, "tuner_service_workers_missing") == 0
    clock.now = time.time() + 120
    assert value(metrics, "tuner_service_workers_alive") == 0
    assert value(metrics, "tuner_service_workers_missing") == 2


def test_stall_clock_is_the_later_of_chief_start_and_last_completion() -> None:
    clock = Clock(now=time.time())
    ledger = Ledger("demo", max_trials=4)
    metrics = ChiefMetrics(ledger, clock=clock).attach()
    start = value(metrics, "tuner_service_last_progress_timestamp_seconds")
    assert start == pytest.approx(clock.now)
    ledger.trial_started("w", "0")
    time.sleep(0.01)
    ledger.trial_ended("0", "COMPLETED", 0.5, BETTER)
    assert value(metrics, "tuner_service_last_progress_timestamp_seconds") > start


def test_worker_metrics_measure_throughput() -> None:
    metrics = WorkerMetrics("demo", "worker-3", samples_per_epoch=1000)
    metrics.epoch_trained(0.5)
    metrics.epoch_trained(2.0)
    assert value(metrics, "tuner_service_worker_epochs_total", worker="worker-3") == 2
    assert value(metrics, "tuner_service_worker_samples_total") == 2000
    assert value(metrics, "tuner_service_worker_samples_per_second") == pytest.approx(500)
    assert value(metrics, "tuner_service_worker_epoch_duration_seconds_count") == 2


def test_worker_callback_times_a_real_keras_fit() -> None:
    import keras
    import numpy as np

    metrics = WorkerMetrics("demo", "worker-0", samples_per_epoch=256)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.random.rand(256, 4), np.random.randint(0, 2, 256)
    callback = metrics.callback()
    import copy

    assert copy.deepcopy(callback) is callback  # keras-tuner deep-copies callbacks per execution
    model.fit(x, y, validation_data=(x, y), epochs=3, batch_size=64, verbose=0, callbacks=[callback])
    assert value(metrics, "tuner_service_worker_epochs_total") == 3
    assert value(metrics, "tuner_service_worker_samples_total") == 768
    assert value(metrics, "tuner_service_worker_samples_per_second") > 0


def test_a_real_scrape_passes_promtool_check_metrics(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    ledger = Ledger("demo", max_trials=2)
    chief = ChiefMetrics(ledger, objective="val_accuracy", direction="max").attach()
    ledger.trial_started("worker-0", "0")
    ledger.trial_reported("0", 0, {"val_accuracy": 0.5})
    ledger.trial_ended("0", "COMPLETED", 0.5, BETTER)
    chief.on_rpc("EndTrial", "OK", 0.002)
    chief.on_decision("end_trial", 0.001)
    worker = WorkerMetrics("demo", "worker-0", samples_per_epoch=100)
    worker.epoch_trained(1.0)
    for metrics in (chief, worker):
        server = serve(metrics.registry, 0, "127.0.0.1")
        try:
            text = scrape(f"http://127.0.0.1:{server.port}/metrics")
        finally:
            server.close()
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr
        assert list(text_string_to_metric_families(text))


def exposed_names() -> set[str]:
    """Every sample name the chief and worker registries can expose (histogram parts included)."""
    ledger = Ledger("demo", max_trials=2)
    chief = ChiefMetrics(ledger).attach()
    ledger.trial_started("w", "0")
    ledger.trial_reported("0", 0, {"a": 1.0})
    ledger.trial_ended("0", "COMPLETED", 0.5, BETTER)
    chief.on_rpc("GetSpace", "OK", 0.001)
    chief.on_decision("create_trial", 0.001)
    worker = WorkerMetrics("demo", "w", samples_per_epoch=1)
    worker.epoch_trained(1.0)
    return {name for m in (chief, worker) for (name, _) in samples(m)}


def test_dashboard_and_alerts_use_only_metrics_that_exist() -> None:
    names = exposed_names()
    used = metric_names(DASHBOARD.read_text()) | metric_names(ALERTS.read_text())
    assert used, "no metric found in the dashboard or alerts"
    assert used <= names, f"unknown metrics: {sorted(used - names)}"
