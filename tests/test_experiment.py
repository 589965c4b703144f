"""`tuner-service experiment`: the seed's protocol end to end, and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli
from tuner_service.experiment import seed_observations, selection_check


def test_seed_observations_are_checked_on_the_best_hyperparameters():
    assert seed_observations("mlp", {"dropout": 0.2})["holds"] is True
    assert seed_observations("mlp", {"dropout": 0.0})["holds"] is False
    assert seed_observations("cnn", {"n_blocks": 2, "filters_0": 32, "filters_1": 64})["holds"] is True
    assert seed_observations("cnn", {"n_blocks": 2, "filters_0": 64, "filters_1": 32})["holds"] is False
    assert seed_observations("cnn", {"n_blocks": 1, "filters_0": 64})["holds"] is False


def test_only_the_layers_in_use_are_shown():
    from tuner_service.experiment import active_hyperparameters

    assert active_hyperparameters("mlp", {"n_layers": 1, "units_0": 50, "units_1": 200, "dropout": 0.1}) == {
        "n_layers": 1,
        "units_0": 50,
        "dropout": 0.1,
    }
    cnn = {"n_blocks": 2, "filters_0": 32, "filters_1": 64, "filters_2": 32, "padding_2": "same"}
    assert active_hyperparameters("cnn", cnn) == {"n_blocks": 2, "filters_0": 32, "filters_1": 64}
    assert active_hyperparameters("pkg.mod:Model", {"units_5": 1}) == {"units_5": 1}


def test_selection_check_catches_a_choice_not_made_by_validation_score():
    trials = [
        {"trial_id": "0", "status": "COMPLETED", "score": 0.8},
        {"trial_id": "1", "status": "COMPLETED", "score": 0.9},
        {"trial_id": "2", "status": "FAILED", "score": None},
    ]
    ok = selection_check({"objective": "val_accuracy", "trials": trials, "best_trial_id": "1"})
    assert ok["ok"] and ok["best_validation_score"] == 0.9
    assert not selection_check({"objective": "val_accuracy", "trials": trials, "best_trial_id": "0"})["ok"]
    assert selection_check({"objective": "val_loss", "trials": trials, "best_trial_id": "0"})["ok"]


@pytest.mark.e2e
def test_experiment_runs_the_seed_protocol(tmp_path: Path):
    # No study file: the defaults plus --set, as in docs/results.md.
    settings = [
        f"directory={tmp_path / 'studies'}",
        "max_trials=2",
        "epochs=2",
        "batch_size=64",
        "seed=1",
        "data.max_train_samples=400",
        "metrics_port=0",
        "status_port=0",
    ]
    args = ["experiment", "--model", "mlp", "-w", "1", "--repeats", "1", "--no-progress"]
    for item in settings:
        args += ["--set", item]
    proc = cli(*args, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    project = tmp_path / "studies" / "experiment-mlp"
    cmp = json.loads((project / "experiment.json").read_text())
    results = json.loads((project / "results.json").read_text())
    # Baseline and tuned model were both tested, after the search chose by validation score.
    assert 0 < cmp["baseline_test_accuracy"] <= 1 and 0 < cmp["tuned_test_accuracy"] <= 1
    assert cmp["tuned_test_accuracy"] == results["test_accuracy"]
    assert cmp["selection"]["ok"] and cmp["selection"]["best_trial_id"] == results["best_trial_id"]
    assert len(cmp["repeated"]["baseline"]) == len(cmp["repeated"]["tuned"]) == 1
    assert cmp["seed"] == {"baseline": 86.6, "tuned": 88.2, "note": "Bayesian optimization, about one hour"}
    assert cmp["seed_observation"]["claim"] == "the tuner picks a non-zero dropout"
    layers = cmp["best_hyperparameters"]["n_layers"]
    assert not any(k.startswith(f"units_{layers}") for k in cmp["best_hyperparameters"])  # layers in use
    md = (project / "experiment.md").read_text()
    assert "| test accuracy, seed (full data) | 86.6 % | 88.2 % | +1.6 points |" in md
    assert "tuner-service experiment --model mlp -w 1 --repeats 1 --no-progress --set directory=" in md
    assert (project / "report.html").exists() and (project / "baseline.json").exists()
    assert (project / "experiment-study.yaml").exists()  # what chief and workers ran
    assert "86.6" in proc.stdout  # the table is printed too
    # The verdict carries its uncertainty: a paired test on the same 401 test images.
    paired = cmp["comparison"]
    assert paired == results["comparison"] and paired["test_size"] == 401
    assert paired["verdict"] in ("tuned better", "baseline better", "within noise")
    assert "on 401 test images (McNemar p = " in md and "95 % CI" in md

    again = cli(*args, timeout=60)
    assert again.returncode == 2 and "already holds a finished search" in again.stderr


def test_experiment_overrides_without_a_study_file():
    from tuner_service import spec as spec_module
    from tuner_service.experiment import experiment_overrides

    overrides = experiment_overrides("cnn", None, ["tuner.num_initial_points=4", "baseline=false"])
    spec = spec_module.load(None, overrides)
    assert spec.name == "experiment-cnn" and spec.model == "cnn"
    assert spec.tuner.type == "bayesian" and spec.tuner.num_initial_points == 4
    assert spec.baseline and spec.retrain_best  # the protocol needs both, whatever was asked
