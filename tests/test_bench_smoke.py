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
    # The chief's own histograms count every call the clients made (its view, beside theirs).
    ours = raw["load"]["ours"]
    assert ours["server_rpcs"] == ours["rpcs"] > 0 and 0 < ours["server_within_50ms"] <= 1


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


@pytest.mark.e2e
def test_oracle_bench_quick_prints_latency_regret_and_stopping_tables(tmp_path):
    """The oracle benchmark's harness, without chief processes (its load part is bench.load's)."""
    out = tmp_path / "oracle.json"
    done = subprocess.run(
        # Optuna is the optional `bench` extra, not a test dependency: its column is left out here.
        [sys.executable, "-m", "bench.oracle_bench", "--quick", "--parts", "latency,regret,stopping"]
        + ["--kinds", "before,ours,random"]
        + ["--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| completed | call | before p50 / p99 / max | ours p50 / p99 / max |" in done.stdout
    assert "| problem | budget | before | ours |" in done.stdout
    assert "CreateTrial p99 at 40 completed ≤ 100 ms" in done.stdout
    raw = json.loads(out.read_text())
    assert {c for c, _ in raw["latency"]["ours"][0]["create_s"]} == {25, 40}
    for problem in ("mlp", "cnn"):
        for kind in ("before", "ours", "random"):
            (run,) = raw["regret"][problem][kind]
            assert set(run["regret_at"]) == {"12", "24"} and all(r >= 0 for r in run["regret_at"].values())
    assert set(raw["stopping"]) == {"10", "100"}


def test_load_preload_completes_trials_that_a_chief_resumes(tmp_path):
    """``bench.load --preload N``: N completed trials in the study's storage before the chief starts."""
    import yaml

    from bench.load import preload_study
    from tuner_service.study.integrity import check_saved_state

    study = {
        "name": "load",
        "model": "bench.sleepy:SleepyHyperModel",
        "tuner": {"type": "bayesian", "num_initial_points": 3},
        "max_trials": 10,
        "seed": 1,
        "directory": str(tmp_path),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    preload_study(path, 6)
    trials = [json.loads(f.read_text()) for f in (tmp_path / "load").glob("trial_*/trial.json")]
    assert len(trials) == 6 and all(t["status"] == "COMPLETED" for t in trials)
    oracle = json.loads((tmp_path / "load" / "oracle.json").read_text())
    assert not oracle["ongoing_trials"] and oracle["fast_bo"]["fitted_at"] >= 3
    check_saved_state(tmp_path / "load", "chief")  # what the chief checks before resuming
