"""The objective's direction, decided once (tuner_service/objective.py) and used by every reader."""

from __future__ import annotations

import pytest

from tuner_service import objective, spec
from tuner_service.experiment import selection_check


@pytest.mark.parametrize(
    ("name", "direction"),
    [("val_accuracy", "max"), ("val_loss", "min"), ("val_mae", "min"), ("val_auc", "max"), ("loss", "min")],
)
def test_direction_is_inferred_with_keras_tuners_rule(name: str, direction: str) -> None:
    assert objective.of_name(name).direction == direction


def test_an_explicit_direction_wins_and_an_unknown_name_needs_one() -> None:
    s = spec.validate({"name": "s", "model": "mlp", "objective": {"name": "val_score", "direction": "max"}})
    assert (s.objective, s.objective_direction) == ("val_score", "max")
    assert objective.of_study(s) == objective.Objective("val_score", "max")
    with pytest.raises(
        objective.ObjectiveError, match="write `objective: {name: val_score, direction: min}`"
    ):
        objective.of_study(spec.validate({"name": "s", "model": "mlp", "objective": "val_score"}))


def test_a_bad_objective_mapping_is_a_study_file_error() -> None:
    with pytest.raises(spec.SpecError, match="objective: direction"):
        spec.validate({"name": "s", "model": "mlp", "objective": {"name": "val_mae", "direction": "down"}})


def test_the_oracle_uses_the_studys_direction() -> None:
    from tuner_service.tuners import build_oracle

    s = spec.validate(
        {"name": "s", "model": "mlp", "tuner": "random", "objective": {"name": "val_mae", "direction": "min"}}
    )
    oracle_objective = build_oracle(s).objective
    assert (oracle_objective.name, oracle_objective.direction) == ("val_mae", "min")


def test_selection_check_follows_the_recorded_direction() -> None:
    trials = [
        {"trial_id": "0", "status": "COMPLETED", "score": 0.2},
        {"trial_id": "1", "status": "COMPLETED", "score": 0.5},
    ]
    base = {"objective": "val_score", "trials": trials}
    assert selection_check({**base, "objective_direction": "min", "best_trial_id": "0"})["ok"]
    assert not selection_check({**base, "objective_direction": "max", "best_trial_id": "0"})["ok"]
