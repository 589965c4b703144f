"""End to end: `tuner-service run` with a real chief and real workers on loopback gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from tests.conftest import cli, tiny_study

pytestmark = pytest.mark.e2e


def _results(tmp_path: Path, name: str = "tiny") -> dict:
    return json.loads((tmp_path / "studies" / name / "results.json").read_text())


def test_two_workers_share_a_search_and_results_are_complete(tmp_path: Path) -> None:
    study = tiny_study(
        tmp_path,
        max_trials=6,
        epochs=2,
        retrain_best=True,
        baseline=True,
        tuner={"type": "bayesian", "num_initial_points": 2},
    )
    result = cli("run", "--config", str(study), "--workers", "2", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)

    trials = res["trials"]
    assert len(trials) == 6 and all(t["status"] == "COMPLETED" for t in trials)
    assert {t["tuner_id"] for t in trials} == {"worker-0", "worker-1"}
    assert all(t["duration"] > 0 and t["score"] is not None for t in trials)
    assert len({t["trial_id"] for t in trials}) == 6

    best = max(trials, key=lambda t: t["score"])
    assert res["best_val_score"] == pytest.approx(best["score"])
    assert res["best_hyperparameters"] == best["hyperparameters"]
    assert set(res["best_hyperparameters"]) >= {
        "n_layers",
        "units_0",
        "dropout",
        "optimizer",
        "learning_rate",
    }
    assert 0.0 < res["test_accuracy"] <= 1.0
    assert 0.0 < res["baseline_test_accuracy"] <= 1.0

    model = keras.models.load_model(res["best_model"])
    assert model.output_shape == (None, 10)

    table = cli("results", "--config", str(study), timeout=120)
    assert table.returncode == 0 and "worker-1" in table.stdout
    as_json = cli("results", "--config", str(study), "--json", timeout=120)
    assert json.loads(as_json.stdout)["best_trial_id"] == res["best_trial_id"]


def test_user_hypermodel_by_module_attr(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:build_tiny", max_trials=2)
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["trials_completed"] == 2
    assert set(res["best_hyperparameters"]) == {"width"}
    assert "baseline_test_accuracy" not in res


def test_bad_user_model_exits_2_before_any_process_starts(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:missing")
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=300)
    assert result.returncode == 2
    assert "has no attribute 'missing'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


def test_chief_with_a_bad_model_exits_2(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, model="tests.fixtures.user_models:NOT_A_MODEL")
    env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"}
    result = cli("chief", "--config", str(study), env=env, timeout=300)
    assert result.returncode == 2
    assert "expected a keras_tuner.HyperModel" in result.stderr
    assert "Traceback" not in result.stderr


def test_hyperband_search_runs_distributed(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, tuner={"type": "hyperband", "max_epochs": 2, "factor": 2}, epochs=2)
    result = cli("run", "--config", str(study), "--workers", "2", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    assert res["tuner"] == "hyperband" and res["trials_completed"] >= 2
    assert all("tuner/epochs" in t["hyperparameters"] for t in res["trials"])
    # The chief's budget is what Hyperband's brackets plan (2 + 2 + 1 trials here), so progress
    # and the trials_max series work for Hyperband too; two workers may run out of new values.
    ledger = json.loads((tmp_path / "studies" / "tiny" / "service_state.json").read_text())
    assert ledger["max_trials"] == 5 and res["trials_completed"] <= 5


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_ctrl_c_stops_every_process_and_the_chief_saves_its_state(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tuner_service.study.ledger import read_snapshot

    study = tiny_study(tmp_path, max_trials=40, epochs=3)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner_service",
            "run",
            "--config",
            str(study),
            "--workers",
            "2",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    project = tmp_path / "studies" / "tiny"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        snap = read_snapshot(project)
        if snap and snap["counts"].get("COMPLETED", 0) >= 1:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("no trial completed in time")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert _processes_mentioning(str(study)) == []
    snap = read_snapshot(project)
    assert snap["state"] == "interrupted"
    assert (project / "oracle.json").exists()


def test_a_loss_objective_is_minimised_end_to_end(tmp_path: Path) -> None:
    """``objective: val_loss``: the best trial is the LOWEST score in results.json, the chief's
    saved state and `status` (a maximised loss would pick the worst trial everywhere)."""
    study = tiny_study(tmp_path, objective="val_loss", max_trials=3, seed=5)
    result = cli("run", "--config", str(study), "--workers", "1", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    res = _results(tmp_path)
    scores = {t["trial_id"]: t["score"] for t in res["trials"] if t["status"] == "COMPLETED"}
    assert len(scores) == 3 and len(set(scores.values())) == 3, scores  # distinct, so the test can tell
    lowest = min(scores, key=scores.get)
    assert res["best_trial_id"] == lowest and res["best_val_score"] == pytest.approx(scores[lowest])

    state = json.loads((tmp_path / "studies" / "tiny" / "service_state.json").read_text())
    assert state["best_trial_id"] == lowest and state["best_score"] == pytest.approx(scores[lowest])
    status = cli("status", "--config", str(study), "--json", timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    best = json.loads(status.stdout)["status"]["best"]
    assert best["trial_id"] == lowest and best["score"] == pytest.approx(scores[lowest])
