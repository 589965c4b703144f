"""Fault injection with real processes on loopback and the shared Fashion-MNIST sample.

Each test runs a chief and workers (``python -m tuner_service chief|worker``), injects one fault
with a signal and checks what docs/fault-tolerance.md promises: the search finishes, exactly
``max_trials`` trials complete, none twice, no completed result is lost, a moved trial resumes
from a later epoch than 0. Timings go to stdout (``pytest -s``) for the docs.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from fault_harness import Search, write_study

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def search(tmp_path: Path, keras_home: Path):
    made: list[Search] = []

    def make(env: dict[str, str] | None = None, **study) -> Search:
        s = Search(tmp_path, write_study(tmp_path, **study), env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill_all()


def _log_time(log: str, text: str, after: float) -> float:
    """Wall-clock time of the first log line containing ``text`` logged after ``after``."""
    for stamp in re.findall(rf"^(\S+ \S+) {re.escape(text)}", log, re.M):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= after:
            return at
    raise AssertionError(f"no {text!r} in the log")


def _held_trial_past(s: Search, tuner_id: str, epochs: int) -> str | None:
    trial_id = s.running_trial_of(tuner_id)
    return trial_id if trial_id is not None and s.backup_epochs(trial_id) >= epochs else None


def test_killed_worker_trial_resumes_elsewhere(search):
    s = search()
    s.chief()
    s.worker(0)
    s.worker(1)
    moved = s.wait_until("worker-0 two epochs into a trial", lambda: _held_trial_past(s, "worker-0", 2))
    s.procs["worker-0"].send_signal(signal.SIGKILL)
    killed_at = time.time()

    assert s.wait_exit("chief", 240) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(3)
    record = s.ledger()["trials"][moved]
    assert record["tuner_id"] == "worker-1" and record["reassigned"] >= 1 and record["attempts"] >= 2
    assert record["resumed_from"] >= 2, record
    assert re.search(r"resuming from epoch [2-9]", s.log("worker-1"))
    print(
        f"\nworker SIGKILL: trial {moved} reassigned and finished {record['ended_at'] - killed_at:.1f}s "
        f"after the kill (lease_timeout 8s), resumed from epoch {record['resumed_from']}"
    )


def test_stopped_worker_is_fenced_when_it_comes_back(search):
    s = search()
    s.chief()
    s.worker(0)
    s.worker(1)
    moved = s.wait_until("worker-0 one epoch into a trial", lambda: _held_trial_past(s, "worker-0", 1))
    s.procs["worker-0"].send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    s.wait_until(
        "the trial to move to worker-1",
        lambda: s.ledger()["trials"][moved]["tuner_id"] == "worker-1",
    )
    moved_after = time.time() - stopped_at
    s.procs["worker-0"].send_signal(signal.SIGCONT)

    assert s.wait_exit("chief", 240) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-0", 30) == 0, s.log("worker-0")[-3000:]
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(3)
    record = s.ledger()["trials"][moved]
    assert record["tuner_id"] == "worker-1" and record["resumed_from"] >= 1, record
    assert f"abandoning trial {moved}: " in s.log("worker-0")
    assert f"trial {moved} is no longer held by worker-0; it was reassigned to worker-1" in s.log("worker-0")
    print(
        f"\nworker SIGSTOP: trial {moved} running on worker-1 {moved_after:.1f}s after the stop "
        f"(lease_timeout 8s), resumed from epoch {record['resumed_from']}; worker-0 fenced after SIGCONT"
    )


def test_chief_killed_and_restarted_resumes_search(search):
    s = search(lease_timeout=20, max_trials=4)  # > chief restart + a worker back-off step
    s.chief()
    s.worker(0)
    s.worker(1)

    def one_done_one_running():
        trials = s.ledger().get("trials", {})
        done = {t: r["score"] for t, r in trials.items() if r["status"] == "COMPLETED"}
        running = [t for t, r in trials.items() if r["status"] == "RUNNING" and s.backup_epochs(t) >= 1]
        return (done, running[0]) if done and running else None

    before, running = s.wait_until("a completed and a running trial", one_done_one_running)
    holder = s.ledger()["trials"][running]["tuner_id"]
    s.procs["chief"].send_signal(signal.SIGKILL)
    s.procs["chief"].wait()
    time.sleep(2)
    restarted_at = time.time()
    s.chief("chief-restarted")

    assert s.wait_exit("chief-restarted", 240) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-0", 30) == 0
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(4, before)
    record = s.ledger()["trials"][running]
    # Re-granted to the worker that kept training it: same attempt, never restarted.
    assert record["tuner_id"] == holder and record["attempts"] == 1, record
    pattern = r"first RPC \((\w+)\) served ([\d.]+)s after the server was built, ([\d.]+)s after"
    first = re.search(pattern, s.log("chief-restarted"))
    assert first, s.log("chief-restarted")[-2000:]
    print(
        f"\nchief SIGKILL + restart: first RPC ({first[1]}) served {first[3]}s after the new chief process "
        f"started ({first[2]}s after its server was built); restart at {restarted_at:.0f}"
    )


def test_chief_gone_for_good_workers_give_up_then_search_resumes(search):
    deadline = 6
    s = search(chief_deadline=deadline, max_trials=2)
    s.chief()
    s.worker(0)
    held = s.wait_until("worker-0 two epochs into a trial", lambda: _held_trial_past(s, "worker-0", 2))
    s.procs["chief"].send_signal(signal.SIGKILL)
    killed_at = time.time()
    code = s.wait_exit("worker-0", deadline + 60)
    exited_at = time.time()
    assert code == 1
    log = s.log("worker-0")
    assert re.search(r"worker worker-0: giving up: chief at \S+ unreachable for 6s", log)
    # The deadline counts from the start of the first call that failed (the next epoch's report);
    # its warning is logged when that call has failed, a few milliseconds later.
    first_failed_at = _log_time(log, "WARNING tuner_service.client: chief unreachable", killed_at)
    gave_up_at = _log_time(log, "ERROR tuner_service.client: giving up", killed_at)
    assert deadline - 0.5 <= gave_up_at - first_failed_at <= deadline + 2, gave_up_at - first_failed_at
    print(
        f"\nchief gone (chief_deadline {deadline}s): worker gave up {gave_up_at - first_failed_at:.1f}s "
        f"after its first failed call, {gave_up_at - killed_at:.1f}s after the kill; process exited "
        f"{exited_at - killed_at:.1f}s after the kill"
    )

    # A new chief and the restarted pod (same tuner id) finish the search from the backup.
    s.chief("chief-restarted")
    s.worker(0, "worker-0-restarted")
    assert s.wait_exit("chief-restarted", 240) == 0, s.chief_log()[-3000:]
    s.assert_search_complete(2)
    record = s.ledger()["trials"][held]
    assert record["resumed_from"] >= 2 and record["attempts"] == 2, record
    assert re.search(r"resuming from epoch [2-9]", s.log("worker-0-restarted"))


def test_failing_trial_is_retried_then_failed_with_its_message(search, tmp_path):
    env = {"FAULT_FAIL_FIRST": "2", "FAULT_COUNTER": str(tmp_path / "fits"), "FAULT_EPOCH_SECONDS": "0"}
    s = search(env, max_trials=2, epochs=1, max_retries_per_trial=1)
    s.chief()
    s.worker(0)
    assert s.wait_exit("chief", 180) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-0", 30) == 0
    trials = s.trials()
    statuses = sorted(t["status"] for t in trials.values())
    assert statuses == ["COMPLETED", "FAILED"], trials
    failed = next(t for t in trials.values() if t["status"] == "FAILED")
    assert "injected failure 2: the user's model is broken" in failed["message"]
    record = s.ledger()["trials"][failed["trial_id"]]
    assert record["attempts"] == 2 and record["status"] == "FAILED"
    assert "injected failure 2" in record["message"]


def test_too_many_failures_end_the_search_with_a_clear_error(search, tmp_path):
    env = {"FAULT_FAIL_FIRST": "100", "FAULT_COUNTER": str(tmp_path / "fits"), "FAULT_EPOCH_SECONDS": "0"}
    s = search(env, max_trials=6, epochs=1, max_consecutive_failed_trials=2, chief_deadline=120)
    s.chief()
    s.worker(0)
    s.worker(1)
    assert s.wait_exit("chief", 180) == 1
    for worker in ("worker-0", "worker-1"):
        # Both told by the chief, neither left retrying an absent chief for chief_deadline.
        assert s.wait_exit(worker, 60) == 1
        assert "the chief ended the search: search failed: Number of consecutive" in s.log(worker)
    assert "search failed: Number of consecutive failures exceeded the limit of 2" in s.chief_log()
    assert s.ledger()["state"] == "failed"
