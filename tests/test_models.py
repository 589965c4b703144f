"""The seed's search spaces, exactly; baselines; the user-model loader."""

from __future__ import annotations

from typing import Any

import keras_tuner
import pytest

from tests.fixtures import user_models
from tuner_service.models import ModelError, load_hypermodel
from tuner_service.models.seed import BASELINES


def _space(model: str, depth_hp: str) -> dict[str, dict[str, Any]]:
    """Every hyperparameter the hypermodel declares when built at its maximum depth."""
    hp = keras_tuner.HyperParameters()
    hp.Fixed(depth_hp, 3)  # a for-loop over range(depth) declares every per-layer hp
    load_hypermodel(model).build(hp)
    out = {}
    for p in hp.space:
        if p.name == depth_hp:
            continue
        config = p.get_config()
        out[p.name] = {
            k: config.get(k)
            for k in ("min_value", "max_value", "step", "values")
            if config.get(k) is not None
        }
    return out


def _depth(model: str, depth_hp: str) -> dict[str, Any]:
    hp = keras_tuner.HyperParameters()
    load_hypermodel(model).build(hp)
    config = next(p for p in hp.space if p.name == depth_hp).get_config()
    return {k: config[k] for k in ("min_value", "max_value", "step")}


def test_mlp_space_is_the_seeds() -> None:
    units = {"min_value": 50, "max_value": 350, "step": 50}
    assert _depth("mlp", "n_layers") == {"min_value": 1, "max_value": 3, "step": 1}
    assert _space("mlp", "n_layers") == {
        "dropout": {"values": [0.0, 0.1, 0.2]},
        "units_0": units,
        "units_1": units,
        "units_2": units,
        "optimizer": {"values": ["sgd", "adam"]},
        "learning_rate": {"values": [0.1, 0.01, 0.001]},
    }


def test_cnn_space_is_the_seeds() -> None:
    assert _depth("cnn", "n_blocks") == {"min_value": 1, "max_value": 3, "step": 1}
    space = _space("cnn", "n_blocks")
    for i in range(3):
        assert space.pop(f"filters_{i}") == {"values": [32, 64]}
        assert space.pop(f"padding_{i}") == {"values": ["valid", "same"]}
    assert space == {
        "dense_units": {"min_value": 25, "max_value": 150, "step": 25},
        "optimizer": {"values": ["sgd", "adam"]},
        "learning_rate": {"values": [0.01, 0.001]},
    }


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_every_cnn_depth_builds_on_28x28(depth: int, padding: str) -> None:
    hp = keras_tuner.HyperParameters()
    hp.Fixed("n_blocks", depth)
    for i in range(depth):
        hp.Fixed(f"padding_{i}", padding)
    model = load_hypermodel("cnn").build(hp)
    assert model.output_shape == (None, 10)


def test_sgd_is_nesterov_with_momentum() -> None:
    hp = keras_tuner.HyperParameters()
    hp.Fixed("optimizer", "sgd")
    model = load_hypermodel("mlp").build(hp)
    assert model.optimizer.nesterov and model.optimizer.momentum == pytest.approx(0.9)


def test_baselines_are_fixed_models() -> None:
    cnn = BASELINES["cnn"]()
    convs = [layer for layer in cnn.layers if "conv" in layer.name]
    assert len(convs) == 1  # the seed's baseline CNN has a single block
    assert BASELINES["mlp"]().output_shape == (None, 10)


def test_user_models_as_function_class_and_instance() -> None:
    fn = load_hypermodel("tests.fixtures.user_models:build_tiny")
    assert callable(fn)
    cls = load_hypermodel("tests.fixtures.user_models:TinyHyperModel")
    assert isinstance(cls, keras_tuner.HyperModel) and cls is not user_models.TINY
    # An instance is used as it is (its configuration kept), not re-created.
    assert load_hypermodel("tests.fixtures.user_models:TINY") is user_models.TINY
    for hypermodel in (fn, cls, user_models.TINY):
        build = hypermodel if callable(hypermodel) and not hasattr(hypermodel, "build") else hypermodel.build
        assert build(keras_tuner.HyperParameters()).output_shape == (None, 10)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_pkg.models:build", "cannot import module 'no_such_pkg.models'"),
        ("tests.fixtures.user_models:missing", "has no attribute 'missing'"),
        ("tests.fixtures.user_models:NOT_A_MODEL", "expected a keras_tuner.HyperModel"),
        # Callables that cannot be build(hp): refused at start-up, not in the first trial.
        ("os:getcwd", r"cannot be called with one argument \(hp\)|signature .* cannot be read"),
        ("tests.fixtures.user_models:two_arguments", r"two_arguments\(hp, shape\) cannot be called"),
        ("tests.fixtures.user_models:NotAHyperModel", "got class NotAHyperModel"),
    ],
)
def test_bad_user_model_refs_are_clear(ref: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_hypermodel(ref)
