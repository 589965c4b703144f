"""A real Prometheus scrapes a real tiny search (chief + 2 workers as processes, like pods).

Checks what a user relies on: every dashboard panel's query returns a series; every alert rule
evaluates cleanly on the real data, every metric it reads exists with a ``study`` label, and its
expression (thresholds relaxed, since a healthy search fires nothing) returns this study's series;
a finished search does not look like a dead chief; the status CLI, the metrics and results.json
agree on the counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    ALERTS,
    DASHBOARD,
    REPO,
    cli,
    free_port,
    metric_names,
    require_tool,
    scrape,
    tiny_study,
)

STUDY = "tiny"
MAX_TRIALS, EPOCHS, WORKERS = 3, 2, 2
LINGER = 8  # seconds the chief keeps serving after the search: final scrapes + a live status call
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval would be for a 1 s scrape interval


class Prometheus:
    def __init__(self, tmp: Path, chief: int, workers: list[int], port: int):
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "tuner-service-chief", "static_configs": [{"targets": [f"127.0.0.1:{chief}"]}]},
                {
                    "job_name": "tuner-service-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in workers]}],
                },
            ],
        }
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                require_tool("prometheus"),
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if "Ready" in scrape(f"{self.url}/-/ready", timeout=1):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)

    def api(self, path: str, **params: Any) -> Any:
        body = json.loads(scrape(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10))
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step="1s")["result"]

    def last(self, expr: str, start: float, end: float) -> float:
        result = self.query_range(expr, start, end)
        assert len(result) == 1, (expr, result)
        return float(result[0]["values"][-1][1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def search(tmp_path: Path, keras_home: Path) -> Iterator[dict[str, Any]]:
    """Prometheus on loopback, then a chief and workers that it scrapes; torn down afterwards."""
    ports = {"oracle": free_port(), "metrics": free_port(), "status": free_port()}
    worker_ports = [free_port() for _ in range(WORKERS)]
    prometheus = Prometheus(tmp_path, ports["metrics"], worker_ports, free_port())
    study = tiny_study(tmp_path, max_trials=MAX_TRIALS, epochs=EPOCHS, status_port=ports["status"])
    contract = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(ports["oracle"])}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(role: str, name: str, env: dict[str, str]) -> None:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tuner_service", role, "--config", str(study)],
                cwd=REPO,
                env={**os.environ, **contract, "KERASTUNER_TUNER_ID": name, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    start = time.time()
    spawn(
        "chief",
        "chief",
        {
            "TUNER_SERVICE_METRICS_PORT": str(ports["metrics"]),
            "TUNER_SERVICE_STATUS_PORT": str(ports["status"]),
            "TUNER_SERVICE_METRICS_LINGER": str(LINGER),
        },
    )
    # Workers start once Prometheus has scraped the chief at zero trials: the alert expressions
    # use increase(), which needs a sample from before the trials ended (on a loaded machine the
    # whole tiny search could otherwise finish before the first successful scrape).
    seen = f'tuner_service_trials_completed{{study="{STUDY}"}} == 0'
    wait_for(lambda: prometheus.api("query", query=seen)["result"], 120, "a first scrape", tmp_path)
    for i, port in enumerate(worker_ports):
        spawn(
            "worker",
            f"worker-{i}",
            {"TUNER_SERVICE_METRICS_PORT": str(port), "TUNER_SERVICE_METRICS_LINGER": "3"},
        )
    try:
        yield {
            "prometheus": prometheus,
            "study": study,
            "project": tmp_path / "studies" / STUDY,
            "chief": procs[0],
            "workers": procs[1:],
            "start": start,
            "logs": tmp_path,
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        prometheus.stop()


def wait_for(predicate: Any, timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = {p.name: p.read_text(errors="replace")[-1500:] for p in logs.glob("*.log")}
            raise AssertionError(f"timed out waiting for {what}: {tails}")
        time.sleep(0.2)


def _rules_evaluated_after(prom: Prometheus, at: float) -> bool:
    """Every rule group's last evaluation began in a second after ``at`` (RFC 3339, UTC)."""
    stamps = [g["lastEvaluation"][:19] for g in prom.api("rules")["groups"]]
    times = [
        datetime.strptime(s, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() for s in stamps
    ]
    return bool(times) and min(times) >= int(at) + 1


# Per alert: (text in its expression, the relaxed text) so that it holds on a healthy search.
RELAXED = {
    "TunerServiceSearchStalled": [("> 3600", "> -1"), ('{state="running"} == 1', '{state="running"} >= 0')],
    "TunerServiceWorkerMissing": [
        ("tuner_service_workers_missing > 0", "tuner_service_workers_missing >= 0"),
        ('{state="running"} == 1', '{state="running"} >= 0'),
    ],
    "TunerServiceTrialFailureRatioHigh": [(") > 0.5", ") >= 0"), (">= 3", ">= 0")],
    "TunerServiceChiefDown": [("[1h]) == 1", "[1h]) >= 0")],
}


def relaxed(name: str, expr: str) -> str:
    for old, new in RELAXED[name]:
        assert old in expr, f"{name}: {old!r} not in its expression (update RELAXED)"
        expr = expr.replace(old, new)
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], t["expr"].replace("$study", STUDY).replace("$__rate_interval", RATE_INTERVAL))
        for panel in board["panels"]
        for t in panel.get("targets", [])
    ]


@pytest.mark.e2e
def test_prometheus_scrapes_a_real_search(search: dict[str, Any]) -> None:
    prom: Prometheus = search["prometheus"]
    project: Path = search["project"]
    logs: Path = search["logs"]

    # While the chief lingers after the search, the status API still answers live.
    results_file = project / "results.json"
    wait_for(results_file.exists, 240, "the search to finish", logs)
    live = cli("status", "--config", str(search["study"]), "--json", timeout=60)
    assert live.returncode == 0, live.stderr
    live_view = json.loads(live.stdout)
    assert live_view["source"].startswith("chief 127.0.0.1:"), live_view["source"]

    assert search["chief"].wait(60) == 0, (logs / "chief.log").read_text()[-3000:]
    for worker in search["workers"]:
        assert worker.wait(60) == 0
    end = time.time()
    start = search["start"]

    # Every dashboard panel's query returns a series over the search.
    empty = [(title, expr) for title, expr in dashboard_queries() if not prom.query_range(expr, start, end)]
    assert not empty, f"panels without data: {empty}"

    # Every alert rule evaluated cleanly, and every metric it reads exists for this study.
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
    assert {r["name"] for r in rules} == {
        "TunerServiceSearchStalled",
        "TunerServiceWorkerMissing",
        "TunerServiceTrialFailureRatioHigh",
        "TunerServiceChiefDown",
    }
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        for name in metric_names(rule["query"]):
            assert prom.query_range(f'{name}{{study="{STUDY}"}}', start, end), (rule["name"], name)
    # The chief said "finished" before it exited, so its silence now is not an outage: once
    # Prometheus has seen it down and evaluated the rules since, no alert says otherwise.
    wait_for(
        lambda: prom.api("query", query='up{job="tuner-service-chief"} == 0')["result"],
        30,
        "Prometheus to see the chief down",
        logs,
    )
    seen_down = time.time()
    wait_for(lambda: _rules_evaluated_after(prom, seen_down), 30, "a rule evaluation after that", logs)
    firing = [a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]]
    assert "TunerServiceChiefDown" not in firing, firing
    finished = prom.query_range(
        f'tuner_service_search_state{{study="{STUDY}",state="finished"}} == 1', start, end
    )
    assert finished, "the final state was never scraped"

    # A healthy search fires nothing, so each alert's expression is also evaluated with its
    # thresholds relaxed: on the real series (their real labels, the real joins on `study`) it
    # must then return this study's series. The search stalled / worker missing / failure ratio
    # expressions at the last scrape of the finished chief; chief down now that its series are gone.
    # On a loaded machine a scrape can time out, so look at the last few points the finished
    # chief was seen at, not only the very last one.
    seen_finished = [float(v[0]) for v in finished[0]["values"]][-5:]
    for rule in rules:
        expr = relaxed(rule["name"], rule["query"])
        times = [time.time()] if rule["name"] == "TunerServiceChiefDown" else seen_finished[::-1]
        results = [prom.api("query", query=expr, time=at)["result"] for at in times]
        studies = [[r["metric"].get("study") for r in result] for result in results]
        assert [STUDY] in studies, (rule["name"], expr, results)

    # The status CLI (live and from the saved state), the metrics and results.json agree.
    results = json.loads(results_file.read_text())
    completed = results["trials_completed"]
    assert completed == MAX_TRIALS
    saved = cli("status", "--config", str(search["study"]), "--json", timeout=60)
    assert saved.returncode == 0, saved.stderr
    saved_view = json.loads(saved.stdout)
    assert saved_view["source"].endswith("service_state.json")
    for view in (live_view, saved_view):
        assert view["status"]["counts"].get("COMPLETED") == completed
        assert view["status"]["max_trials"] == MAX_TRIALS
        assert {t["trial_id"] for t in view["trials"] if t["status"] == "COMPLETED"} == {
            r["trial_id"] for r in results["trials"] if r["status"] == "COMPLETED"
        }
        assert view["status"]["best"]["score"] == pytest.approx(results["best_val_score"])
    assert prom.last(f'tuner_service_trials_completed{{study="{STUDY}"}}', start, end) == completed
    assert (
        prom.last(f'tuner_service_trials_ended_total{{study="{STUDY}",status="completed"}}', start, end)
        == completed
    )
    assert prom.last(f'tuner_service_trials_max{{study="{STUDY}"}}', start, end) == MAX_TRIALS
    assert prom.last(f'tuner_service_best_objective{{study="{STUDY}"}}', start, end) == pytest.approx(
        results["best_val_score"]
    )
    # Each worker counted the epochs it trained; together, every epoch of every trial.
    epochs = prom.api(
        "query",
        query=f'sum(max_over_time(tuner_service_worker_epochs_total{{study="{STUDY}"}}[10m]))',
        time=end,
    )
    assert float(epochs["result"][0]["value"][1]) == completed * EPOCHS
