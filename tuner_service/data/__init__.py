"""The study's data: loaded from ``data.source``, checked, split, and described as a task.

Sources (README "Your own model and data"):

* ``keras:<name>``: a Keras built-in dataset through its unmodified loader, which downloads into
  ``$KERAS_HOME`` with internet and reads that cache offline (the default,
  ``keras:fashion_mnist``, is the seed's data). Images are scaled to [0, 1] with a channel axis,
  labels one-hot, as the seed did.
* ``npz:<path>``: arrays ``x_train``, ``y_train`` and optionally ``x_val``/``y_val``,
  ``x_test``/``y_test`` (names overridable with ``data.keys``); labels as stored.
* ``images:<dir>``: a class-per-folder image tree read with
  ``keras.utils.image_dataset_from_directory`` (``<dir>/<class>/*.png``, or ``<dir>/train/``,
  ``<dir>/test/`` and optionally ``<dir>/validation/`` trees), pixels scaled to [0, 1].
* ``package.module:attr``: a function returning ``{"train": ..., "validation": ..., "test":
  ...}`` (validation and test optional), each ``(x, y)`` arrays or a batched ``tf.data.Dataset``
  of ``(x, y)``.

``data.validation_split`` holds out part of train for every source without a validation set of
its own (stratified for classification). Uint8 arrays are images: float32 in [0, 1].

Bad data is a :class:`DataError` naming the source and the problem; :func:`check` finds what it
can without starting TensorFlow (``run`` calls it before any process starts), :func:`load` the
rest (the chief calls it before it serves). Workers call :func:`load` once per process.
"""

from __future__ import annotations

from tuner_service.data import arrays, functions, images, keras_datasets
from tuner_service.data.core import FASHION_MNIST, DataError, Part, Splits, Task
from tuner_service.data.keras_datasets import KERAS_DATASETS, keras_cache_present
from tuner_service.data.labels import infer_task, split_train_val
from tuner_service.spec import DataSpec

__all__ = [
    "FASHION_MNIST",
    "KERAS_DATASETS",
    "DataError",
    "Part",
    "Splits",
    "Task",
    "check",
    "infer_task",
    "keras_cache_present",
    "load",
    "split_train_val",
]


def _kind(source: str) -> tuple[str, str]:
    prefix, _, rest = source.partition(":")
    if prefix in ("keras", "npz", "images"):
        return prefix, rest
    return "function", source


def check(spec: DataSpec, seed: int | None = None, *, call_function: bool = True) -> None:
    """Every problem that shows without starting TensorFlow (``run`` calls it before any process).

    npz files are loaded and checked whole, image folders for classes and images, Keras names
    against the known loaders (and, with no cache, the loader itself runs); a user function is
    called (it imports what it needs) unless ``call_function`` is False (the chief, whose
    :func:`load` calls it next). The chief's :func:`load` checks the rest before it serves.
    """
    seed = 0 if seed is None else seed
    kind, rest = _kind(spec.source)
    if kind == "keras":
        if not keras_cache_present(keras_datasets.dataset_name(spec.source, rest)):
            # No cache to read: try the loader now (it downloads with internet), so an offline
            # machine gets the loader's error here rather than in the chief's log.
            keras_datasets.load(spec.source, rest, spec, seed)
    elif kind == "npz":
        arrays.from_arrays(spec.source, spec, seed, arrays.npz_arrays(spec.source, rest, spec))
    elif kind == "images":
        images.check(spec.source, rest)
    elif call_function:
        functions.load(spec.source, spec, seed)


def load(spec: DataSpec, seed: int | None = None, batch_size: int = 128) -> Splits:
    """Load the study's data; the split depends only on ``seed`` so every process agrees."""
    seed = 0 if seed is None else seed
    kind, rest = _kind(spec.source)
    if kind == "keras":
        return keras_datasets.load(spec.source, keras_datasets.dataset_name(spec.source, rest), spec, seed)
    if kind == "npz":
        return arrays.from_arrays(spec.source, spec, seed, arrays.npz_arrays(spec.source, rest, spec))
    if kind == "images":
        return images.load(spec.source, rest, spec, seed, batch_size)
    return functions.load(spec.source, spec, seed)
