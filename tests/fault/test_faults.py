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

from tests.fault.fault_harness import LEASE_TIMEOUT, Search, write_study
from tuner_service import process

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
        f"after the kill (lease_timeout {LEASE_TIMEOUT}s), resumed from epoch {record['resumed_from']}"
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
    assert s.wait_exit("worker-0", 30) == 0, s.log("worker-0")[-3000:]  # fenced, then told the search is over
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(3)
    record = s.ledger()["trials"][moved]
    assert record["tuner_id"] == "worker-1" and record["resumed_from"] >= 1, record
    assert f"abandoning trial {moved}: " in s.log("worker-0")
    assert f"trial {moved} is no longer held by worker-0; it was reassigned to worker-1" in s.log("worker-0")
    print(
        f"\nworker SIGSTOP: trial {moved} running on worker-1 {moved_after:.1f}s after the stop "
        f"(lease_timeout {LEASE_TIMEOUT}s), resumed from epoch {record['resumed_from']}; "
        "worker-0 fenced after SIGCONT"
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
    # The chief is really gone for the workers (a call of theirs failed) before it comes back.
    s.wait_until(
        "a worker to find the chief gone",
        lambda: any("chief unreachable" in s.log(w) for w in ("worker-0", "worker-1")),
        timeout=60,
    )
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
    assert code == 3  # process.EXIT_CHIEF_UNREACHABLE: the chart's podFailurePolicy ignores it
    log = s.log("worker-0")
    assert re.search(r"worker worker-0: giving up: chief at \S+ unreachable for 6s", log)
    # The deadline counts from the start of the first call that failed (the next epoch's report);
    # its warning is logged when that call has failed, a few milliseconds later.
    first_failed_at = _log_time(log, "WARNING tuner_service.client: chief unreachable", killed_at)
    gave_up_at = _log_time(log, "ERROR tuner_service.client: giving up", killed_at)
    # The back-off never sleeps past the deadline, so the give-up is late only by a call that
    # fails at once (connection refused) and the log write; +5 s is margin for a loaded machine
    # and still tells the deadline from one counted twice (12 s) or from the kill.
    assert deadline - 0.5 <= gave_up_at - first_failed_at <= deadline + 5, gave_up_at - first_failed_at
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


def test_sigterm_hands_the_trial_over_at_once(search):
    """Spot preemption: the SIGTERMed worker finishes its epoch, hands the trial back and exits 143
    (128 + SIGTERM: the worker Job replaces it without spending a retry, see process.py);
    the idle worker resumes it from that epoch within seconds, not after lease_timeout (300 s)."""
    s = search(lease_timeout=300, max_trials=2, epochs=15)
    s.chief()
    s.worker(0, env={"FAULT_EPOCH_SECONDS": "3"})  # a trial longer than worker-1's start: interrupted
    held = s.wait_until("worker-0 to hold a trial", lambda: s.running_trial_of("worker-0"))
    s.worker(1, env={"FAULT_EPOCH_SECONDS": "0"})  # runs the other trial, then waits for work

    def ready() -> bool:
        worker_1 = s.ledger().get("workers", {}).get("worker-1", {})
        idle = worker_1.get("trials_completed") == 1 and worker_1.get("state") == "waiting"
        return idle and s.backup_epochs(held) >= 1

    s.wait_until("worker-1 idle and worker-0 an epoch into its trial", ready)
    s.procs["worker-0"].send_signal(signal.SIGTERM)
    signalled_at = time.time()

    assert s.wait_exit("worker-0", 30) == process.EXIT_HANDED_OVER == 143, s.log("worker-0")[-3000:]
    exited_at = time.time()
    log_0 = s.log("worker-0")
    # At the end of the epoch it was in (after its backup), or before the next one began.
    stopped = re.search(
        rf"worker worker-0: stopped by SIGTERM (after|before) epoch (\d+)\b.*; trial {held} handed back "
        "to the chief",
        log_0,
    )
    assert stopped, log_0[-3000:]
    epochs_done = int(stopped[2]) - (stopped[1] == "before")
    resumed = "INFO tuner_service.checkpoints: resuming from epoch"
    s.wait_until("worker-1 to resume the trial", lambda: resumed in s.log("worker-1"), timeout=60)
    resumed_at = _log_time(s.log("worker-1"), resumed, signalled_at)
    # The epoch in progress (3 s), worker-1's next back-off step, its model build and restore:
    # seconds. 60 s is margin for a loaded machine and still a fifth of the 300 s lease.
    assert resumed_at - signalled_at < 60, resumed_at - signalled_at

    assert s.wait_exit("chief", 120) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-1", 30) == 0
    s.assert_search_complete(2)
    record = s.ledger()["trials"][held]
    assert record["tuner_id"] == "worker-1" and record["attempts"] == 2, record
    assert record["released"] == 1 and record["reassigned"] == 0, record  # no lease ran out
    assert record["resumed_from"] == epochs_done, record  # the last completed epoch, nothing redone
    assert f"resuming from epoch {epochs_done} " in s.log("worker-1")
    print(
        f"\nworker SIGTERM (lease_timeout 300s): trial {held} resumed on worker-1 from epoch {epochs_done} "
        f"{resumed_at - signalled_at:.1f}s after the signal; worker-0 exited 143 "
        f"{exited_at - signalled_at:.1f}s after it"
    )


def _running_past(s: Search, epochs: int) -> tuple[str, str] | None:
    for worker in ("worker-0", "worker-1"):
        trial_id = _held_trial_past(s, worker, epochs)
        if trial_id:
            return worker, trial_id
    return None


def test_hyperband_with_a_killed_worker_completes_its_bracket_plan(search):
    # max_epochs 3, factor 3: one bracket of 3 one-epoch trials, the best continued to 3 epochs,
    # and one of 2 three-epoch trials: 6 trials (compat.hyperband_planned_trials).
    s = search(tuner={"type": "hyperband", "max_epochs": 3, "factor": 3}, epochs=3)
    s.chief()
    s.worker(0)
    s.worker(1)
    victim, moved = s.wait_until("a worker two epochs into a trial", lambda: _running_past(s, 2))
    survivor = "worker-1" if victim == "worker-0" else "worker-0"
    s.procs[victim].send_signal(signal.SIGKILL)

    assert s.wait_exit("chief", 240) == 0, s.chief_log()[-3000:]
    assert s.wait_exit(survivor, 30) == 0
    assert s.ledger()["max_trials"] == 6
    s.assert_search_complete(6)
    record = s.ledger()["trials"][moved]
    assert record["tuner_id"] == survivor and record["reassigned"] >= 1 and record["resumed_from"] >= 2, (
        record
    )
    print(
        f"\nHyperband, {victim} SIGKILLed: trial {moved} resumed on {survivor}; "
        "all 6 planned trials completed"
    )


def test_two_processes_with_one_tuner_id_the_newer_takes_over(search):
    """Two pods of one worker index (a replacement started while the old pod still runs): the
    newer process gets the tuner id's trial and resumes it; the older is fenced and exits 1."""
    s = search(max_trials=3, epochs=5)
    s.chief()
    s.worker(0, env={"FAULT_EPOCH_SECONDS": "1.5"})
    s.wait_until("worker-0 an epoch into a trial", lambda: _held_trial_past(s, "worker-0", 1))
    s.worker(0, name="worker-0-twin")

    assert s.wait_exit("worker-0", 120) == 1, s.log("worker-0")[-3000:]
    assert re.search(
        r"worker worker-0: fenced: \w+: worker-0: another process with this tuner id \(\S+\) took over from "
        r"this one \(\S+\); two workers must not share a tuner id",
        s.log("worker-0"),
    ), s.log("worker-0")[-3000:]
    assert s.wait_exit("chief", 240) == 0, s.chief_log()[-3000:]
    assert s.wait_exit("worker-0-twin", 30) == 0
    s.assert_search_complete(3)
    trials = s.ledger()["trials"]
    taken_over = [t for t, r in trials.items() if r["attempts"] == 2]
    assert len(taken_over) == 1 and all(r["attempts"] <= 2 for r in trials.values()), trials
    assert "a new process" in s.chief_log() and "took over from" in s.chief_log()
