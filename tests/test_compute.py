"""Worker device set-up: study options for precision and XLA, the input pipeline, GC freezing."""

from __future__ import annotations

import gc

import keras
import keras_tuner
import numpy as np
import pytest

from tuner_service import compute
from tuner_service.models.seed import SeedMLP
from tuner_service.process import freeze_startup_heap
from tuner_service.spec import ComputeSpec, SpecError, validate

BASE = {"name": "c", "model": "mlp"}


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_compute_options_default_to_keras_behaviour_and_are_validated():
    spec = validate(BASE)
    assert spec.compute == ComputeSpec(mixed_precision=False, jit_compile="auto")
    assert spec.data.pipeline == "auto"
    on = validate({**BASE, "compute": {"mixed_precision": True, "jit_compile": True}})
    assert on.compute.mixed_precision and on.compute.jit_compile is True
    with pytest.raises(SpecError) as err:
        validate({**BASE, "compute": {"jit_compile": "sometimes", "fp16": True}, "data": {"pipeline": "x"}})
    problems = " ".join(err.value.problems)
    assert "compute.jit_compile" in problems and "compute.fp16: unknown key" in problems
    assert "data.pipeline" in problems


def test_mixed_precision_sets_the_global_policy_for_the_device(restore_policy):
    got = compute.configure_devices(ComputeSpec(mixed_precision=True))
    expected = "mixed_float16" if compute.has_gpu() else "mixed_bfloat16"
    assert got["policy"] == expected == keras.mixed_precision.global_policy().name
    model = SeedMLP().build(keras_tuner.HyperParameters())
    assert model.layers[-1].compute_dtype == expected.removeprefix("mixed_")
    assert compute.configure_devices(ComputeSpec())["policy"] == "float32"


@pytest.mark.parametrize("jit", [True, False])
def test_compiled_hypermodel_sets_xla_on_every_model_it_builds(jit):
    hypermodel = compute.for_study(SeedMLP(), ComputeSpec(jit_compile=jit))
    assert isinstance(hypermodel, compute.CompiledHyperModel)
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert model.jit_compile is jit
    x, y = np.zeros((8, 28, 28, 1), "float32"), keras.utils.to_categorical(np.arange(8) % 10, 10)
    history = hypermodel.fit(keras_tuner.HyperParameters(), model, x, y, epochs=1, verbose=0)
    assert "loss" in history.history


def test_auto_xla_leaves_the_hypermodel_alone_and_functions_are_wrapped_too():
    inner = SeedMLP()
    assert compute.for_study(inner, ComputeSpec()) is inner

    def build(hp):
        return SeedMLP().build(hp)

    assert (
        compute.for_study(build, ComputeSpec(jit_compile=False))
        .build(keras_tuner.HyperParameters())
        .jit_compile
        is False
    )


def test_tf_data_for_seed_models_arrays_for_user_models():
    assert compute.wants_tf_data("auto", seed_model=True)
    assert not compute.wants_tf_data("auto", seed_model=False)
    assert compute.wants_tf_data("tf.data", seed_model=False)
    assert not compute.wants_tf_data("numpy", seed_model=True)


def test_datasets_batch_shuffle_each_epoch_and_keep_validation_in_order():
    x = np.arange(20, dtype="float32").reshape(20, 1)
    y = np.arange(20, dtype="float32").reshape(20, 1)
    train, val = compute.datasets(x, y, x, y, batch_size=8, seed=0)
    first = np.concatenate([b[0].numpy() for b in train]).ravel()
    second = np.concatenate([b[0].numpy() for b in train]).ravel()
    assert sorted(first) == sorted(second) == list(range(20))
    assert list(first) != list(second), "reshuffled every epoch"
    assert [len(b[0]) for b in val] == [8, 8, 4]
    assert np.concatenate([b[0].numpy() for b in val]).ravel().tolist() == list(range(20))


def test_freezing_start_up_objects_keeps_them_out_of_every_collection():
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # TensorFlow and Keras are in there
    finally:
        gc.unfreeze()
