"""The private keras-tuner behaviour isolated in tuner_service/compat.py, pinned by tests."""

from __future__ import annotations

import keras_tuner
import pytest

from tuner_service import compat


def _space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Int("units", 1, 1000)  # large enough that the space never runs out
    return hp


def _count_trials(oracle: keras_tuner.Oracle, tmp_path) -> int:
    """Drive a real oracle to its end, one trial at a time, as one worker does."""
    compat.attach_project_dir(oracle, str(tmp_path), "hb")
    created = 0
    while True:
        trial = oracle.create_trial("worker-0")
        if trial.status == "STOPPED":
            return created
        assert trial.status == "RUNNING", trial.status
        created += 1
        oracle.update_trial(trial.trial_id, {"val_accuracy": (created % 7) / 7})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


@pytest.mark.parametrize(("max_epochs", "factor", "iterations"), [(9, 3, 1), (10, 3, 2), (8, 2, 1)])
def test_hyperband_planned_trials_is_the_number_the_oracle_creates(tmp_path, max_epochs, factor, iterations):
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_epochs=max_epochs,
        factor=factor,
        hyperband_iterations=iterations,
        hyperparameters=_space(),
        seed=1,
    )
    planned = compat.hyperband_planned_trials(oracle)
    assert compat.trial_budget(oracle) == planned  # what the chief's progress and metrics show
    assert planned == _count_trials(oracle, tmp_path)
    assert planned > 0


def test_hyperband_without_an_iteration_limit_has_no_planned_count():
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_epochs=9,
        hyperband_iterations=None,
        hyperparameters=_space(),
    )
    assert compat.hyperband_planned_trials(oracle) is None


def test_other_oracles_budget_is_their_max_trials():
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=7)
    assert compat.trial_budget(oracle) == 7


def test_supported_version_range_contains_the_installed_keras_tuner():
    assert compat.check_version() == keras_tuner.__version__
