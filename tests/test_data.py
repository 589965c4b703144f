"""Data sources, splits and tasks without a search (fast); end to end in test_data_sources.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tuner_service import data
from tuner_service.spec import DataSpec


def _source(tmp_path: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp_path / "d.npz", **arrays)
    return f"npz:{tmp_path / 'd.npz'}"


def test_npz_with_renamed_keys_integer_labels_and_a_stratified_validation_split(tmp_path: Path) -> None:
    y = np.repeat(np.arange(4), 25)
    source = _source(tmp_path, features=np.arange(100 * 3, dtype="float32").reshape(100, 3), labels=y)
    spec = DataSpec(source=source, keys={"x_train": "features", "y_train": "labels"}, validation_split=0.2)
    splits = data.load(spec, seed=3)
    assert splits.task == data.Task("classification", (3,), num_classes=4, one_hot=False)
    assert splits.sizes() == {"train": 80, "val": 20, "test": 0}
    assert np.bincount(splits.y_val).tolist() == [5, 5, 5, 5]  # every class keeps its share
    assert splits.y_train.dtype == y.dtype  # labels as stored
    again = data.load(spec, seed=3)
    assert np.array_equal(again.x_val, splits.x_val)  # every process gets the same split


def test_float_targets_are_regression_and_uint8_images_are_scaled(tmp_path: Path) -> None:
    x = np.full((30, 8, 8), 255, np.uint8)
    y = np.linspace(0, 1, 30).astype("float32")
    splits = data.load(DataSpec(source=_source(tmp_path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])))
    assert splits.task.kind == "regression" and splits.task.input_shape == (8, 8, 1)
    assert splits.x_train.max() == 1.0 and splits.x_test.shape == (5, 8, 8, 1)
    assert len(splits.val) == 6  # 20 % held out at random, not per "class"


def test_one_hot_labels_and_a_declared_task(tmp_path: Path) -> None:
    y = np.eye(3, dtype="float32")[np.arange(30) % 3]
    splits = data.load(DataSpec(source=_source(tmp_path, x_train=np.zeros((30, 2)), y_train=y)))
    assert splits.task.one_hot and splits.task.num_classes == 3
    as_regression = DataSpec(
        source=_source(tmp_path, x_train=np.zeros((30, 2)), y_train=np.arange(30)), task="regression"
    )
    assert data.load(as_regression).task.kind == "regression"


def test_a_user_function_of_arrays_gets_validation_held_out() -> None:
    splits = data.load(DataSpec(source="tests.fixtures.user_data:arrays_without_validation"), seed=0)
    assert splits.sizes() == {"train": 64, "val": 16, "test": 20}
    assert splits.task.num_classes == 3


def test_an_image_folder_needs_two_classes(tmp_path: Path) -> None:
    (tmp_path / "pics" / "only").mkdir(parents=True)
    (tmp_path / "pics" / "only" / "a.png").write_bytes(b"")
    with pytest.raises(data.DataError, match="only one class folder"):
        data.check(DataSpec(source=f"images:{tmp_path / 'pics'}"))


def test_seed_hypermodels_fit_the_task() -> None:
    import keras_tuner

    from tuner_service.models import load_hypermodel
    from tuner_service.models.seed import BASELINES

    regression = data.Task("regression", (8,), outputs=1)
    model = load_hypermodel("mlp", regression).build(keras_tuner.HyperParameters())
    assert model.output_shape == (None, 1) and model.loss == "mean_squared_error"
    sparse = data.Task("classification", (32, 32, 3), num_classes=5)
    assert BASELINES["cnn"](sparse).output_shape == (None, 5)
    assert BASELINES["cnn"](sparse).loss == "sparse_categorical_crossentropy"


def test_run_tries_the_keras_loader_when_its_cache_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    def offline() -> None:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    assert not data.keras_cache_present("cifar10")
    with pytest.raises(data.DataError, match="the Keras loader failed .OSError: Temporary failure"):
        data.check(DataSpec(source="keras:cifar10"))
    (tmp_path / "datasets" / "cifar-10-batches-py").mkdir(parents=True)
    assert data.keras_cache_present("cifar10")
    data.check(DataSpec(source="keras:cifar10"))  # the cache is there: the chief's load reads it
