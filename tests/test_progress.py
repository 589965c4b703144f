"""The live table of `tuner-service run`: elapsed time, ETA, and processes that stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import tiny_study
from tuner_service import spec as spec_module
from tuner_service.progress import Progress, eta_seconds


@dataclass
class FakeProc:
    name: str
    returncode: int | None = None


def _snap(state: str = "running", **trials: tuple[str, float, float | None]) -> dict:
    """A ledger snapshot; each trial is (status, started_at, ended_at)."""
    records = {
        tid: {
            "trial_id": tid,
            "status": status,
            "started_at": start,
            "ended_at": end,
            "duration": None if end is None else end - start,
        }
        for tid, (status, start, end) in trials.items()
    }
    counts: dict[str, int] = {}
    for status, _, _ in trials.values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "state": state,
        "max_trials": 6,
        "counts": counts,
        "best_score": 0.8,
        "trials": records,
        "workers": {"worker-0": {"state": "training", "trial_id": "2", "trials_completed": 1}},
    }


def test_eta_is_the_work_left_at_the_typical_trial_time_shared_by_the_workers():
    snap = _snap(a=("COMPLETED", 0.0, 100.0), b=("COMPLETED", 0.0, 120.0), c=("RUNNING", 100.0, None))
    # 4 trials not ended x median 110 s, less 30 s already trained on the running one, 2 workers
    assert eta_seconds(snap, workers=2, now=130.0) == pytest.approx((4 * 110 - 30) / 2)
    # nothing ended yet: nothing to go by
    assert eta_seconds(_snap(c=("RUNNING", 100.0, None)), workers=2, now=130.0) is None
    # a running trial past the typical time counts as nearly done, never as negative work
    assert eta_seconds(snap, workers=2, now=1000.0) == pytest.approx((4 * 110 - 110) / 2)


def _render(progress: Progress, snap: dict, procs: list[FakeProc]) -> str:
    console = Console(width=200, record=True)
    console.print(progress.table(snap, procs))
    return console.export_text()


def test_the_table_shows_elapsed_eta_and_workers_that_stopped(tmp_path: Path):
    spec = spec_module.load(tiny_study(tmp_path))
    now = [1000.0]
    progress = Progress(spec, enabled=False, clock=lambda: now[0])
    now[0] += 185
    snap = _snap(a=("COMPLETED", 0.0, 100.0), b=("COMPLETED", 0.0, 120.0), c=("RUNNING", 100.0, None))
    text = _render(progress, snap, [FakeProc("chief"), FakeProc("worker-0"), FakeProc("worker-1")])
    assert "elapsed 3 min 05 s" in text and "ETA ~" in text
    assert "training" in next(line for line in text.splitlines() if "worker-0" in line)  # alive
    # worker-0's process exited (Ctrl-C, a crash) while the chief last heard "training"
    text = _render(progress, snap, [FakeProc("chief"), FakeProc("worker-0", -15), FakeProc("worker-1")])
    row = next(line for line in text.splitlines() if "worker-0" in line)
    assert "stopped" in row and "training" not in row and "-15" in row
    # the search has ended: no ETA
    finished = {**snap, "state": "finished"}
    text = _render(progress, finished, [FakeProc("chief", 0), FakeProc("worker-0", 0)])
    assert "elapsed 3 min 05 s" in text and "ETA" not in text
