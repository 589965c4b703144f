"""The status gRPC API over real sockets: status, trials with history, the event stream, the CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, cli, free_port, tiny_study, wait_for
from tuner_service.status._generated import status_pb2 as pb
from tuner_service.status.client import StatusClient, StatusUnavailable
from tuner_service.status.server import StatusServer, make_status_server
from tuner_service.study import endpoints
from tuner_service.study.files import HISTORY as HISTORY_FILE
from tuner_service.study.files import STATE as STATE_FILE
from tuner_service.study.history import TrialHistory
from tuner_service.study.ledger import Event, Ledger

BETTER = lambda a, b: a > b  # noqa: E731


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("demo", max_trials=4, path=tmp_path / STATE_FILE)


@pytest.fixture
def server(ledger: Ledger, tmp_path: Path) -> Iterator[StatusServer]:
    server = make_status_server(
        ledger, "127.0.0.1:0", objective="val_accuracy", direction="max", history_path=tmp_path / HISTORY_FILE
    ).start()
    yield server
    server.close()


def client_for(server: StatusServer) -> StatusClient:
    return StatusClient(f"127.0.0.1:{server.port}", timeout=5)


def test_status_and_trials_reflect_the_ledger(ledger: Ledger, server: StatusServer) -> None:
    ledger.trial_started("worker-0", "00")
    ledger.trial_started("worker-1", "01")
    ledger.trial_reported("00", 0, {"val_accuracy": 0.5, "loss": 1.2})
    ledger.trial_reported("00", 1, {"val_accuracy": 0.6, "loss": 0.9})
    ledger.trial_ended("00", "COMPLETED", 0.6, BETTER)
    with client_for(server) as client:
        status = client.status()
        trials = {t.trial_id: t for t in client.trials()}
        running = client.trials(["RUNNING"], history=False)
    assert (status.study, status.state, status.max_trials) == ("demo", "running", 4)
    assert dict(status.counts) == {"COMPLETED": 1, "RUNNING": 1}
    assert status.progress == pytest.approx(0.25)
    assert (status.best.trial_id, status.best.score) == ("00", pytest.approx(0.6))
    assert (status.objective, status.direction) == ("val_accuracy", "max")
    workers = {w.tuner_id: w for w in status.workers}
    assert workers["worker-1"].state == "training" and workers["worker-1"].trial_id == "01"
    assert workers["worker-0"].trials_completed == 1
    done = trials["00"]
    assert done.status == "COMPLETED" and done.score == pytest.approx(0.6) and done.epochs == 2
    assert [h.step for h in done.history] == [0, 1]
    assert done.history[1].metrics["loss"] == pytest.approx(0.9)
    assert done.HasField("duration_seconds") and not trials["01"].HasField("score")
    assert [t.trial_id for t in running] == ["01"] and not running[0].history


def test_history_survives_a_chief_restart_and_a_torn_line(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE
    history = TrialHistory(path).attach(ledger)
    ledger.trial_started("worker-0", "00")
    ledger.trial_reported("00", 0, {"loss": 1.0})
    ledger.trial_reported("00", 1, {"loss": 0.5})
    ledger.trial_reported("00", 1, {"loss": 0.5})  # the best step again, at the trial's end
    with path.open("a") as f:
        f.write('{"trial_id": "00", "st')  # a chief killed mid-write
    restarted = TrialHistory(path)
    assert [p["step"] for p in restarted.get("00")] == [0, 1] == [p["step"] for p in history.get("00")]
    assert restarted.get("00")[1]["metrics"] == {"loss": 0.5}


def test_event_stream_carries_trial_events_and_ends_with_the_search(
    ledger: Ledger, server: StatusServer
) -> None:
    received: list[pb.Event] = []
    subscribed = threading.Event()

    def watch() -> None:
        with client_for(server) as client:
            stream = client.events()
            subscribed.set()
            received.extend(stream)

    thread = threading.Thread(target=watch)
    thread.start()
    assert subscribed.wait(5)
    # The server-side subscription starts with the first read of the stream: wait for it.
    wait_for(lambda: server.hub.subscribers == 1, "the stream's subscription", 10)
    ledger.trial_started("worker-0", "00")
    ledger.worker_seen("worker-0", "training")  # not streamed: says nothing new
    ledger.trial_reported("00", 0, {"val_accuracy": 0.5})
    ledger.trial_ended("00", "COMPLETED", 0.5, BETTER)
    ledger._emit(Event("trial_reassigned", time.time(), "worker-1", "01", {"reason": "lease expired"}))
    ledger.set_state("finished")
    thread.join(10)
    assert not thread.is_alive(), "the stream did not end with the search"
    kinds = [e.kind for e in received]
    assert kinds == [
        pb.Event.TRIAL_STARTED,
        pb.Event.TRIAL_REPORTED,
        pb.Event.TRIAL_ENDED,
        pb.Event.TRIAL_REASSIGNED,
        pb.Event.SEARCH_STATE,
    ]
    assert received[1].metrics["val_accuracy"] == pytest.approx(0.5) and received[1].step == 0
    assert received[2].status == "COMPLETED" and received[2].score == pytest.approx(0.5)
    assert received[3].message == "lease expired"
    assert received[4].state == "finished"


def test_a_stream_opened_after_the_end_returns_at_once(ledger: Ledger, server: StatusServer) -> None:
    ledger.set_state("failed", "too many failures")
    with client_for(server) as client:
        events = list(client.events())
    assert [(e.kind, e.state) for e in events] == [(pb.Event.SEARCH_STATE, "failed")]


def test_closing_the_server_ends_open_streams(ledger: Ledger) -> None:
    server = make_status_server(ledger, "127.0.0.1:0").start()
    done = threading.Event()
    outcome: list[object] = []

    def watch() -> None:
        with client_for(server) as client:
            try:
                outcome.append(list(client.events()))
            except StatusUnavailable as err:
                outcome.append(err)
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_for(lambda: server.hub.subscribers == 1, "the stream's subscription", 10)
    server.close()
    assert done.wait(5), "an open stream kept the chief from shutting down"
    # Ended by the server as a stream ends (the client sees its end), not cut off by the
    # transport shutting down under it (which a client sees as an error).
    assert outcome == [[]], outcome


def test_unreachable_chief_is_one_clear_error() -> None:
    with StatusClient(f"127.0.0.1:{free_port()}", timeout=1) as client:
        with pytest.raises(StatusUnavailable, match="UNAVAILABLE"):
            client.status()


def test_status_cli_live_json_and_table(ledger: Ledger, server: StatusServer) -> None:
    ledger.trial_started("worker-0", "00")
    ledger.trial_ended("00", "COMPLETED", 0.75, BETTER)
    result = cli("status", "--chief", f"127.0.0.1:{server.port}", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"]["counts"] == {"COMPLETED": 1}
    assert out["trials"][0]["trial_id"] == "00" and out["source"].startswith("chief ")
    table = cli("status", "--chief", f"127.0.0.1:{server.port}", timeout=60, env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "study demo: running, trials 1/4 completed" in table.stdout
    assert "0.7500 (trial 00)" in table.stdout


def test_status_cli_watch_follows_until_the_search_ends(ledger: Ledger, server: StatusServer) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner_service", "status", "--chief", f"127.0.0.1:{server.port}", "--watch"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: server.hub.subscribers, "the CLI to subscribe to the event stream", 30)
    ledger.trial_started("worker-0", "00")
    ledger.trial_ended("00", "COMPLETED", 0.5, BETTER)
    ledger.set_state("finished")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("study demo: running, trials 0/4")
    assert lines[-1].startswith("study demo: finished, trials 1/4 completed")


def test_status_cli_falls_back_to_the_saved_state(tmp_path: Path, server: StatusServer) -> None:
    # endpoints.json left by an earlier chief names a port where another study's chief answers now
    study = tiny_study(tmp_path, status_port=free_port())
    project = tmp_path / "studies" / "tiny"
    endpoints.write(project, "0.0.0.0", status_port=server.port)
    ledger = Ledger("tiny", max_trials=2, path=project / STATE_FILE)
    TrialHistory(project / HISTORY_FILE).attach(ledger)
    ledger.trial_started("worker-0", "0")
    ledger.trial_reported("0", 0, {"val_accuracy": 0.5})
    ledger.trial_ended("0", "COMPLETED", 0.5, BETTER)
    ledger.set_state("finished")
    result = cli("status", "--config", str(study), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["source"].endswith(STATE_FILE)
    assert out["trials"][0]["history"][0]["metrics"] == {"val_accuracy": 0.5}
    assert out["status"]["study"] == "tiny"
    assert out["status"]["state"] == "finished" and out["status"]["counts"] == {"COMPLETED": 1}


def test_status_cli_finds_the_chief_through_endpoints_json(tmp_path: Path, ledger: Ledger) -> None:
    study = tiny_study(tmp_path, name="demo", status_port=free_port())
    server = make_status_server(ledger, "127.0.0.1:0").start()
    try:
        endpoints.write(tmp_path / "studies" / "demo", "0.0.0.0", status_port=server.port)
        result = cli("status", "--config", str(study), "--json", timeout=60)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == f"chief 127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "give either --config"),
        (("--chief", "nohost"), 2, "expected host:port"),
        (("--chief", "127.0.0.1:1"), 1, "chief status at 127.0.0.1:1: UNAVAILABLE"),
    ],
)
def test_status_cli_errors_are_one_line(args: tuple[str, ...], code: int, message: str) -> None:
    result = cli("status", *args, timeout=60)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_status_watch_waits_for_a_chief_that_is_still_starting(tmp_path: Path) -> None:
    import subprocess
    import sys

    study = tiny_study(tmp_path, status_port=free_port())  # nobody listens there
    project = tmp_path / "studies" / "tiny"
    stderr = tmp_path / "status.err"
    with stderr.open("w") as err_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner_service",
                "status",
                "--config",
                str(study),
                "--watch",
                "--wait",
                "30",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    # The CLI is waiting now; then the chief comes up and writes endpoints.json.
    wait_for(lambda: "waiting up to 30s for the chief" in stderr.read_text(), "the CLI to wait", 60)
    ledger = Ledger("tiny", max_trials=1, path=project / STATE_FILE)
    project.mkdir(parents=True)
    server = make_status_server(ledger, "127.0.0.1:0").start()
    try:
        endpoints.write(project, "127.0.0.1", status_port=server.port)
        wait_for(lambda: server.hub._queues, "the CLI to subscribe to the event stream", 30)
        ledger.trial_started("worker-0", "0")
        ledger.trial_ended("0", "COMPLETED", 0.5, BETTER)
        ledger.set_state("finished")
        out, _ = proc.communicate(timeout=30)
    finally:
        server.close()
    err = stderr.read_text()
    assert proc.returncode == 0, err
    assert "waiting up to 30s for the chief" in err
    assert out.strip().splitlines()[-1].startswith("study tiny: finished, trials 1/1 completed")


def test_the_table_keeps_running_trials_and_the_latest_others() -> None:
    from tuner_service.status.cli import _table_rows

    trials = [pb.Trial(trial_id=str(i), status="COMPLETED") for i in range(30)]
    trials[3].status = "RUNNING"
    rows = _table_rows(trials, limit=5)
    assert [t.trial_id for t in rows] == ["3", "26", "27", "28", "29"]
    assert [t.trial_id for t in _table_rows(trials, limit=1)] == ["3"]
    assert len(_table_rows(trials, limit=100)) == 30
