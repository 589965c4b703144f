"""The chief's side of issue 11, with real chief and worker processes on loopback.

One owner per study (the study lock), liveness (``worker_deadline``, a finished search finalized
without workers), workers shown stopped after the chief stops, a model whose ``build`` raises, and
one-line errors with exit 2 for an unusable study directory or saved state. Each test asserts
the exit code, the message, the trial counts, that no process is left and a bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fault.fault_harness import Search, write_study
from tests.helpers import cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Fast lock timings for the tests (the defaults are a 30 s lease renewed every 5 s).
LOCK_ENV = {
    "TUNER_SERVICE_LOCK_STALE": "3",
    "TUNER_SERVICE_LOCK_HEARTBEAT": "0.5",
    "FAULT_EPOCH_SECONDS": "0",
}


@pytest.fixture
def search(tmp_path: Path, keras_home: Path):
    made: list[Search] = []

    def make(env: dict[str, str] | None = None, **study) -> Search:
        s = Search(tmp_path, write_study(tmp_path, **study), {**LOCK_ENV, **(env or {})})
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill_all()
    for s in made:  # no process left behind, checked by pid
        for name, proc in s.procs.items():
            assert proc.poll() is not None, f"{name} (pid {proc.pid}) still running"
            assert not _pid_exists(proc.pid), f"{name} (pid {proc.pid}) still exists"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _lock(s: Search) -> dict:
    try:
        return json.loads((s.project / "chief.lock").read_text())
    except (OSError, ValueError):
        return {}


def _ended_once(s: Search) -> Counter:
    """How often the chief logged each trial's end as COMPLETED (never more than once)."""
    import re

    ended = Counter(re.findall(r"trial (\S+) ended COMPLETED", s.chief_log()))
    assert all(n == 1 for n in ended.values()), ended
    return ended


def test_second_chief_exits_2_naming_the_holder_and_a_finished_search_is_finalized_alone(search):
    s = search(max_trials=2, epochs=2, retrain_best=True, env={"FAULT_EPOCH_SECONDS": "1.0"})
    first = s.chief()
    s.wait_until("the chief's lock", lambda: _lock(s).get("pid") == first.pid)
    started = time.monotonic()
    s.chief("chief-second")
    assert s.wait_exit("chief-second", 60) == 2
    refused_in = time.monotonic() - started
    message = s.log("chief-second")
    assert f"is served by another chief: host {socket.gethostname()}, pid {first.pid}, since " in message
    assert "would be considered dead after" in message and "Traceback" not in message
    assert first.poll() is None, "the first chief must not be disturbed"
    assert not (s.project / "chief-second.json").exists()

    # The search ends; the chief is SIGKILLed during its final retrain (2 paced epochs).
    s.worker(0)
    results = s.project / "results.json"
    s.wait_until(
        "the chief retraining the best trial",
        lambda: s.ledger().get("state") == "finished" and not results.exists(),
        timeout=180,
    )
    first.kill()
    first.wait()
    assert not results.exists(), "the retrain ended before the kill"
    assert s.wait_exit("worker-0", 30) == 0
    ledger_before = (s.project / "service_state.json").read_text()

    # The next chief finishes it alone (no worker runs): retrains, tests, writes results.json.
    started = time.monotonic()
    s.chief("chief-final")
    assert s.wait_exit("chief-final", 120) == 0, s.log("chief-final")[-3000:]
    finalized_in = time.monotonic() - started
    log = s.log("chief-final")
    assert "taken over from" in log and f"its process {first.pid} on this host has exited" in log
    assert "finishing it without workers" in log
    s.assert_search_complete(2)
    saved = json.loads(results.read_text())
    assert saved["state"] == "finished" and saved["test_accuracy"] is not None  # retrained and tested
    assert (s.project / "service_state.json").read_text() == ledger_before
    assert _lock(s)["token"] == 2 and _lock(s)["released"] is True

    # Started once more: nothing to do, nothing rewritten, exit 0.
    s.chief("chief-again")
    assert s.wait_exit("chief-again", 120) == 0
    assert "results are written: nothing to do" in s.log("chief-again")
    assert (s.project / "service_state.json").read_text() == ledger_before
    assert _lock(s)["token"] == 3 and _lock(s)["released"] is True
    print(
        f"\nsecond chief refused in {refused_in:.1f}s; killed retrain finished alone in {finalized_in:.1f}s"
    )


def test_chief_without_workers_gives_up_after_worker_deadline_and_the_search_resumes(search):
    s = search(
        max_trials=2, epochs=3, worker_deadline=4, lease_timeout=30, env={"FAULT_EPOCH_SECONDS": "1.0"}
    )
    s.chief()
    s.worker(0)
    s.wait_until("worker-0 training", lambda: s.running_trial_of("worker-0"))
    s.procs["worker-0"].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    assert s.wait_exit("chief", 60) == 1
    gave_up_in = time.monotonic() - killed
    # Counted from the worker's last call (its last epoch report, up to ~1 s before the kill).
    assert 4 - 2 <= gave_up_in <= 4 + 15, gave_up_in
    log = s.chief_log()
    assert "no worker called the chief for 4s (worker_deadline 4s) while 2 of 2 trials remain" in log
    assert "start workers and the chief again to resume" in log and "Traceback" not in log
    ledger = s.ledger()
    assert ledger["state"] == "interrupted" and "worker_deadline" in ledger["message"]
    # Issue 15 point 2: the worker is not shown training after its chief stopped.
    assert ledger["workers"]["worker-0"]["state"] == "stopped"
    assert _lock(s)["released"] is True

    # The state was saved: a new chief and worker finish the search, nothing run twice. (A live
    # worker's start-up and first epoch take longer than 4 s on a busy machine: a real deadline.)
    s.study.write_text(s.study.read_text().replace("worker_deadline: 4", "worker_deadline: 120"))
    s.chief("chief-resumed")
    s.worker(1)
    assert s.wait_exit("chief-resumed", 180) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(2)
    print(f"\nno worker: chief gave up {gave_up_in:.1f}s after the last worker died (worker_deadline 4s)")


def test_chief_that_loses_its_lock_stops_without_writing(search):
    s = search(max_trials=2)
    chief = s.chief()
    s.wait_until("the chief serving", lambda: s.ledger().get("state") == "running")
    held = _lock(s)
    oracle_before = (s.project / "oracle.json").read_text()
    # Another chief (another host) took the study over, as one that judged this one stale would.
    taken = {**held, "host": "other-node", "pid": 4242, "nonce": "other", "token": held["token"] + 1}
    taken["heartbeat"] = time.time()
    tmp = s.project / ".chief.lock.test.tmp"
    tmp.write_text(json.dumps(taken))
    os.replace(tmp, s.project / "chief.lock")
    started = time.monotonic()
    assert s.wait_exit("chief", 30) == 1
    stopped_in = time.monotonic() - started
    assert chief.returncode == 1
    log = s.chief_log()
    assert "chief: stopped without writing: another chief took over study" in log and "other-node" in log
    assert _lock(s)["nonce"] == "other"  # the new owner's lock is left alone
    assert (s.project / "oracle.json").read_text() == oracle_before
    assert s.ledger().get("state") == "running"  # not rewritten as interrupted by the fenced chief
    print(f"\nlock taken over: the old chief stopped {stopped_in:.1f}s later (heartbeat 0.5s)")


def test_build_that_raises_fails_its_trials_not_the_chief(search):
    s = search(
        model="tests.fixtures.fault_models:BrokenForSomeValues",
        max_trials=3,
        epochs=1,
        seed=2,
        max_retries_per_trial=1,
        max_consecutive_failed_trials=3,
    )
    s.chief()
    s.worker(0)
    assert s.wait_exit("chief", 180) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-0", 30) == 0
    log = s.chief_log()
    assert "build raised for the default hyperparameters" in log and "Traceback" not in log
    trials = s.trials()
    statuses = Counter(t["status"] for t in trials.values())
    assert statuses["COMPLETED"] >= 1 and statuses["FAILED"] >= 1, statuses
    assert statuses["COMPLETED"] + statuses["FAILED"] == 3
    ledger = s.ledger()["trials"]
    for trial_id, trial in trials.items():
        if trial["status"] == "FAILED":
            assert "activation 'unsupported' is not implemented" in trial["message"]
            assert ledger[trial_id]["attempts"] == 2  # retried once (max_retries_per_trial: 1)
    _ended_once(s)
    results = json.loads((s.project / "results.json").read_text())
    assert results["trials_completed"] == statuses["COMPLETED"]


# -- one line, exit 2: an unusable study directory or saved state (no TensorFlow needed) ----------
def _saved_study(tmp_path: Path) -> tuple[Path, Path]:
    """A study file and the folder of a search that had run one trial."""
    study = write_study(tmp_path, max_trials=2)
    project = tmp_path / "studies" / "faults"
    (project / "trial_0").mkdir(parents=True)
    (project / "trial_0" / "trial.json").write_text(json.dumps({"trial_id": "0", "status": "COMPLETED"}))
    (project / "oracle.json").write_text(json.dumps({"start_order": ["0"], "ongoing_trials": {}}))
    (project / "service_state.json").write_text(json.dumps({"state": "interrupted", "trials": {}}))
    (project / "chief.json").write_text("{}")  # keras-tuner's Tuner state of tuner id "chief"
    return study, project


def _chief(study: Path):
    env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"}
    started = time.monotonic()
    done = cli("chief", "--config", str(study), env=env, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: (p / "oracle.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"), "oracle.json is corrupt"),
        (lambda p: (p / "oracle.json").write_text('{"start_order": ['), "oracle.json is corrupt"),
        (lambda p: (p / "service_state.json").write_text("{"), "service_state.json is corrupt"),
        (lambda p: (p / "trial_0" / "trial.json").write_text("[1, 2"), "trial_0/trial.json is corrupt"),
        (lambda p: (p / "trial_0" / "trial.json").unlink(), "trial_0/trial.json is missing, but"),
        (
            lambda p: (p / "chief.json").rename(p / "chief-0.json"),
            "holds a search but chief.json (this chief's tuner id) is missing; found chief-0.json: start the "
            "chief with that KERASTUNER_TUNER_ID",
        ),
        # Valid JSON that keras-tuner cannot load: found only when it reloads (TensorFlow loads).
        (
            lambda p: (p / "oracle.json").write_text('{"start_order": ["0"]}'),
            "cannot reload the search saved in",
        ),
    ],
    ids=[
        "oracle-binary",
        "oracle-truncated",
        "ledger-corrupt",
        "trial-corrupt",
        "trial-deleted",
        "tuner-id-changed",
        "oracle-unloadable",
    ],
)
def test_unusable_saved_state_is_one_line_and_exit_2(tmp_path: Path, damage, expected):
    study, project = _saved_study(tmp_path)
    damage(project)
    done, seconds = _chief(study)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("tuner-service chief:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "from a backup, or move " in lines[0] and " away to start the study over" in lines[0]
    assert str(project) in lines[0]
    assert json.loads((project / "chief.lock").read_text())["released"] is True
    assert seconds < 90


def test_study_directory_that_is_a_file_is_one_line_and_exit_2(tmp_path: Path):
    (tmp_path / "studies").write_text("not a folder")
    done, seconds = _chief(write_study(tmp_path))
    assert done.returncode == 2
    studies = tmp_path / "studies"
    assert done.stderr.strip().splitlines() == [
        f"tuner-service chief: study directory {studies / 'faults'}: {studies} is a file, not a folder; "
        "choose another `directory`"
    ]
    assert seconds < 30
