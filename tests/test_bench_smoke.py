"""The benchmark harness (``python -m bench --smoke``) runs end to end and reports every figure.

A benchmark is not a test: nothing here asserts a speed. It asserts that both paths -- stock
keras-tuner and tuner-service -- ran every trial, that the load test got every answer, and
that the table was printed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.e2e
def test_bench_smoke_runs_both_paths_and_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| figure | stock | ours | stock/ours | note |" in done.stdout
    raw = json.loads(out.read_text())
    assert {(r["impl"], r["workers"]) for r in raw["e2e"]} == {("stock", 1), ("ours", 1)}
    for run in raw["e2e"]:
        assert run["ok"] and run["trials_run"] == run["trials"], run
    for impl, result in raw["load"].items():
        assert result["errors"] == 0 and result["trials_completed"] == result["clients"] * result["cycles"], (
            impl
        )


def _recorded(tmp_path, curves: list[list[float]]):
    """A recorded search without stopping, as ``bench/early_stopping.py --out`` writes it."""
    trials = [{"id": f"{i:02d}", "curve": c, "epochs": len(c)} for i, c in enumerate(curves)]
    off = {
        "epochs": sum(len(c) for c in curves),
        "best_val_accuracy": max(map(max, curves)),
        "trials": trials,
    }
    settings = {"model": "mlp", "max_trials": len(curves), "epochs": 3, "batch_size": 64}
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps({"settings": settings, "runs": [{"tuner": "random", "seed": 1, "off": off}]}))
    return path


def test_early_stopping_replay_applies_the_chiefs_rule_to_recorded_curves(tmp_path):
    from bench.early_stopping import parse_variant, replay

    path = _recorded(
        tmp_path, [[0.5, 0.6, 0.7], [0.6, 0.7, 0.8], [0.7, 0.8, 0.9], [0.1, 0.2, 0.3], [0.8, 0.9, 0.95]]
    )
    recorded = json.loads(path.read_text())["runs"][0]["off"]
    on = replay(recorded, parse_variant("median:min_epochs=1:min_trials=3"), epochs=3)
    # Trial 03 is below every running average at its first epoch: cut after 1 of 3 epochs.
    assert [t["epochs"] for t in on["trials"]] == [3, 3, 3, 1, 3]
    assert on["trials_stopped"] == 1 and on["epochs"] == 13
    assert on["best_trial"] == "04" and on["best_val_accuracy"] == 0.95
    done = subprocess.run(
        [sys.executable, "bench/early_stopping.py", "--replay", str(path), "--variant", "median"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| random | median | 1 | 15 → 13 | 13% |" in done.stdout


def test_early_stopping_replay_of_a_missing_file_is_one_clear_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/early_stopping.py", "--replay", str(tmp_path / "nope.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--replay: cannot read a recorded run" in done.stderr and "Traceback" not in done.stderr
