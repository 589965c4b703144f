"""How a worker uses its device: GPU memory, precision, XLA, and the input pipeline.

Everything here is set up once per worker process, before the first trial:

* :func:`configure_devices` -- GPU memory growth (a process takes GPU memory as it needs it
  instead of all of it, so a second process in the pod -- or the next trial's leftovers -- never
  runs out) and the mixed-precision policy. It must run before TensorFlow touches a GPU.
* :class:`CompiledHyperModel` -- sets ``jit_compile`` (XLA) on every model the hypermodel builds,
  through Keras' public ``Model.jit_compile`` attribute, so the seed's and users' hypermodels
  need no change.
* :func:`datasets` -- the training and validation data as ``tf.data`` pipelines built once
  (tensors cached in memory, shuffled per epoch, batched, prefetched), so the device never
  waits on the host between batches and no trial re-converts the arrays.
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import keras_tuner

from tuner_service.spec import ComputeSpec

log = logging.getLogger(__name__)


def _tf_gpus() -> list[Any]:
    if keras.backend.backend() != "tensorflow":
        return []
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def has_gpu() -> bool:
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return bool(_tf_gpus())


def configure_devices(compute: ComputeSpec) -> dict[str, Any]:
    """Memory growth on every GPU, then the precision policy. Returns what was set (for logs).

    (JAX grows its GPU memory when ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, which must be set
    before JAX starts: the container's environment, not this function.)
    """
    found = _tf_gpus()
    if found:
        import tensorflow as tf

        for gpu in found:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as err:  # already initialised: too late to change, say so
                log.warning("cannot enable memory growth on %s: %s", gpu.name, err)
    gpu = has_gpu()
    policy = "float32"
    if compute.mixed_precision:
        # float16 is what GPU tensor cores run fastest; CPUs have bfloat16 units instead.
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return {"gpu": gpu, "policy": policy, "jit_compile": compute.jit_compile}


class CompiledHyperModel(keras_tuner.HyperModel):
    """Wraps a hypermodel (a HyperModel or a ``build(hp)`` function); sets XLA on its models."""

    def __init__(self, inner: Any, jit_compile: bool | str):
        super().__init__()
        self.inner = inner if isinstance(inner, keras_tuner.HyperModel) else None
        self._build_fn = inner.build if self.inner is not None else inner
        self.jit_compile = jit_compile

    def build(self, hp: keras_tuner.HyperParameters) -> Any:
        model = self._build_fn(hp)
        if self.jit_compile != "auto" and isinstance(model, keras.Model) and model.compiled:
            model.jit_compile = bool(self.jit_compile)
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: Any, *args: Any, **kwargs: Any) -> Any:
        if self.inner is not None:
            return self.inner.fit(hp, model, *args, **kwargs)
        return model.fit(*args, **kwargs)


def for_study(hypermodel: Any, compute: ComputeSpec) -> Any:
    """The hypermodel to tune: wrapped only when the study asks for an explicit XLA setting."""
    if compute.jit_compile == "auto":
        return hypermodel
    return CompiledHyperModel(hypermodel, compute.jit_compile)


def wants_tf_data(pipeline: str, seed_model: bool) -> bool:
    """``auto``: tf.data for the seed's models; users' hypermodels get the arrays they expect."""
    if keras.backend.backend() != "tensorflow":
        return False
    return pipeline == "tf.data" or (pipeline == "auto" and seed_model)


def datasets(x_train: Any, y_train: Any, x_val: Any, y_val: Any, batch_size: int, seed: int | None) -> tuple:
    """(train, validation) ``tf.data`` pipelines, built once and reused by every trial."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .cache()
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(autotune)
    )
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size).cache().prefetch(autotune)
    return train, val
