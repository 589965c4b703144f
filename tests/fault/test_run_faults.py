"""`tuner-service run` under faults, through the real CLI: it never waits for nobody, leaves no
process behind (checked by pid), and its verdict is the search's (docs/fault-tolerance.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fault.fault_harness import write_study
from tests.helpers import REPO, wait_for
from tuner_service.study.ledger import read_snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


class Run:
    """``tuner-service run`` as a real process the test can signal."""

    def __init__(self, study: Path, *args: str, env: dict[str, str] | None = None):
        self.project = study.parent / "studies" / "faults"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuner_service", "run", "--config", str(study), "--no-progress", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FAULT_EPOCH_SECONDS": "1.0", **(env or {})},
        )
        self.children: list[int] = []

    def ledger(self) -> dict[str, Any]:
        return read_snapshot(self.project) or {}

    def wait_for_children(self, n: int) -> list[int]:
        """The children of ``run`` once there are ``n``: the chief first, then the workers in order."""
        wait_for(lambda: len(children_of(self.proc.pid)) == n, f"{n} children", 120)
        self.children = sorted(children_of(self.proc.pid))  # started in this order
        return self.children

    def finish(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        for pid in [self.proc.pid, *self.children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.communicate()


@pytest.fixture
def runs():
    made: list[Run] = []

    def make(study: Path, *args: str, env: dict[str, str] | None = None) -> Run:
        run = Run(study, *args, env=env)
        made.append(run)
        return run

    yield make
    for run in made:
        run.kill()


def test_no_worker_left_ends_run_within_seconds_with_each_workers_error(
    tmp_path: Path, runs, keras_home
) -> None:
    study = write_study(tmp_path, model="tests.fixtures.fault_models:BrokenInWorkers", max_trials=2)
    run = runs(study, "--workers", "2")
    chief, *workers = run.wait_for_children(3)
    wait_for(lambda: not [pid for pid in workers if alive(pid)], "both workers to fail", 180)
    workers_gone = time.monotonic()
    code, _, err = run.finish(timeout=60)
    ended_in = time.monotonic() - workers_gone
    assert code == 1, err[-3000:]
    assert "search stopped: no worker is left to train the remaining trials (0/2 trials completed)" in err
    for worker in ("worker-0", "worker-1"):
        assert f"{worker} exited 1: OSError: injected: the worker cannot read its data" in err, err[-3000:]
    assert "Traceback" not in err
    assert not alive(chief)
    assert run.ledger()["state"] == "interrupted"  # the chief saved its state: a later run resumes
    print(f"\nno worker left: run ended {ended_in:.1f}s after the last worker exited")


def test_chief_refusing_the_study_ends_run_at_once_with_its_error(tmp_path: Path, runs, keras_home) -> None:
    study = write_study(tmp_path, model="tests.fixtures.fault_models:RefusedByChief", max_trials=2)
    run = runs(study, "--workers", "2")
    children = run.wait_for_children(3)
    code, _, err = run.finish(timeout=180)
    assert code == 2, err[-3000:]
    assert "the chief refused the study (exit 2); logs in " in err
    assert (
        "chief exited 2: tuner-service chief: model 'tests.fixtures.fault_models:RefusedByChief': "
        "cannot instantiate without arguments: injected: the chief refuses this model"
    ) in err, err[-3000:]
    assert "worker-0" not in err  # stopped by run, not failed: nothing to say about them
    assert not [pid for pid in children if alive(pid)]


def test_killed_worker_search_completes_and_run_says_where_its_trial_went(
    tmp_path: Path, runs, keras_home
) -> None:
    study = write_study(tmp_path, max_trials=3, epochs=4)
    run = runs(study, "--workers", "2")
    run.wait_for_children(3)

    def worker0_two_epochs_in() -> str | None:
        for trial_id, record in run.ledger().get("trials", {}).items():
            if record["tuner_id"] == "worker-0" and record["status"] == "RUNNING" and record["epochs"] >= 2:
                return trial_id
        return None

    moved = wait_for(worker0_two_epochs_in, "worker-0 two epochs into a trial", 180)
    worker0 = next(pid for pid in run.children if b"worker-0" in Path(f"/proc/{pid}/environ").read_bytes())
    os.kill(worker0, signal.SIGKILL)
    killed = time.monotonic()
    code, out, err = run.finish(timeout=240)
    print(f"\nworker SIGKILL under run: search finished, run exited 0 {time.monotonic() - killed:.1f}s later")
    assert code == 0, err[-3000:]
    ledger = run.ledger()
    assert ledger["state"] == "finished" and ledger["counts"] == {"COMPLETED": 3}
    record = ledger["trials"][moved]
    assert record["tuner_id"] == "worker-1" and record["resumed_from"] >= 2
    expected = (
        f"note: worker-0 was killed by SIGKILL; its trial {moved} went to worker-1, "
        f"resumed from epoch {record['resumed_from']} (COMPLETED)"
    )
    assert expected in err, err[-3000:]
    assert "search failed" not in err
    assert not [pid for pid in run.children if alive(pid)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signals_to_run_leave_no_process_behind(tmp_path: Path, runs, keras_home, sig: int) -> None:
    study = write_study(tmp_path, max_trials=20, epochs=4)
    run = runs(study, "--workers", "2")
    children = run.wait_for_children(3)
    wait_for(lambda: run.ledger().get("counts", {}).get("RUNNING"), "the search to run", 180)
    signalled = time.monotonic()
    run.proc.send_signal(sig)
    code, _, err = run.finish(timeout=120)
    # SIGKILL: the kernel sends each child SIGTERM (PR_SET_PDEATHSIG); the chief saves its state.
    wait_for(lambda: not [pid for pid in children if alive(pid)], "every child to exit", 60)
    stopped_in = time.monotonic() - signalled
    assert code == 128 + sig if sig == signal.SIGTERM else code == -signal.SIGKILL, err[-3000:]
    if sig == signal.SIGTERM:
        assert "interrupted (SIGTERM): stopping workers, then the chief" in err
    wait_for(lambda: run.ledger().get("state") == "interrupted", "the chief's saved state", 30)
    print(f"\nrun {signal.Signals(sig).name}: every child gone {stopped_in:.1f}s after the signal")
