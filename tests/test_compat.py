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


class _BrokenForDefaults(keras_tuner.HyperModel):
    """Raises for its default activation, like a user model that supports only some values."""

    def build(self, hp):
        import keras

        units = hp.Int("units", 8, 64, step=8)
        activation = hp.Choice("activation", ["unsupported", "relu"])
        if activation == "unsupported":
            raise ValueError("activation 'unsupported' is not implemented")
        hp.Float("dropout", 0.0, 0.5)  # declared only by builds that get this far
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=activation)])


def test_a_build_that_raises_for_the_defaults_does_not_stop_the_tuner(tmp_path):
    from tuner_service.tuners import ServiceTuner

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=8, seed=3
    )
    tuner = ServiceTuner(
        oracle=oracle, hypermodel=_BrokenForDefaults(), directory=str(tmp_path), project_name="p"
    )
    assert tuner.space_error == "ValueError: activation 'unsupported' is not implemented"
    space = {hp.name for hp in tuner.oracle.get_space().space}
    assert space == {"units", "activation"}  # what build declared before it raised
    # keras-tuner's own build wrapper is back (ours is gone), and values that work still build.
    assert tuner.hypermodel.build.__func__ is keras_tuner.HyperModel._build_wrapper
    hp = tuner.oracle.get_space()
    hp.values["activation"] = "relu"
    assert tuner.hypermodel.build(hp) is not None


def test_a_build_that_works_declares_the_whole_space(tmp_path):
    from tuner_service.tuners import ServiceTuner

    class Fine(_BrokenForDefaults):
        def build(self, hp):
            hp.Choice("activation", ["relu", "unsupported"])
            return super().build(hp)

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=2
    )
    tuner = ServiceTuner(oracle=oracle, hypermodel=Fine(), directory=str(tmp_path), project_name="p")
    assert tuner.space_error is None
    assert {hp.name for hp in tuner.oracle.get_space().space} == {"units", "activation", "dropout"}
