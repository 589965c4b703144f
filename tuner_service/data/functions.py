"""A user's data function (``package.module:attr``): arrays or batched ``tf.data`` datasets."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from tuner_service.data.arrays import from_arrays
from tuner_service.data.core import SPLIT_NAMES, DataError, Part, Splits
from tuner_service.data.labels import infer_task
from tuner_service.spec import DataSpec


def _call_user_function(source: str) -> Any:
    module_name, _, attr_path = source.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise DataError(source, f"cannot import module {module_name!r} ({err})") from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise DataError(source, f"{module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(source, f"{attr_path!r} is a {type(obj).__name__}, not a function")
    try:
        return obj()
    except Exception as err:  # noqa: BLE001 - the user's function may raise anything
        raise DataError(source, f"the data function raised {type(err).__name__}: {err}") from None


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "element_spec") and hasattr(value, "cardinality")


def load(source: str, spec: DataSpec, seed: int) -> Splits:
    """Call the function and check what it returned: arrays split as arrays, datasets as given."""
    returned = _call_user_function(source)
    if not isinstance(returned, dict) or "train" not in returned:
        raise DataError(
            source,
            f"the data function returned a {type(returned).__name__}; expected a dict "
            '{"train": ..., "validation": ... (optional), "test": ... (optional)}',
        )
    unknown = sorted(set(returned) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(source, f"unknown split(s) {unknown}; expected train, validation, test")
    values = {k: v for k, v in returned.items() if v is not None}
    if not any(_is_dataset(v) for v in values.values()):
        pairs = {}
        for name, value in values.items():
            if not (isinstance(value, tuple | list) and len(value) == 2):
                raise DataError(
                    source, f"{name}: expected (x, y) arrays or a tf.data.Dataset, got {type(value).__name__}"
                )
            pairs[name] = tuple(value)
        return from_arrays(source, spec, seed, pairs)
    return _from_datasets(source, spec, values)


def _dataset_part(source: str, name: str, value: Any) -> tuple[Part, np.ndarray, tuple[int, ...]]:
    """A batched dataset of (x, y) as a Part, its labels (one pass over it) and its x shape."""
    if not _is_dataset(value):
        raise DataError(source, f"{name}: mix of arrays and datasets; give every split as a tf.data.Dataset")
    spec = value.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(source, f"{name}: the dataset's elements must be (x, y) pairs, got {spec}")
    x_shape = tuple(spec[0].shape)
    if len(x_shape) < 2:
        raise DataError(source, f"{name}: x of shape {x_shape}: expected batches (dataset.batch(n))")
    try:
        labels = [np.asarray(y) for y in value.map(lambda x, y: y)]
    except Exception as err:  # noqa: BLE001 - the dataset's own pipeline may raise anything
        raise DataError(source, f"{name}: reading the dataset failed ({type(err).__name__}: {err})") from None
    if not labels or not sum(len(y) for y in labels):
        raise DataError(source, f"{name} is empty (0 samples)")
    y = np.concatenate(labels)
    return Part(dataset=value, size=len(y)), y, tuple(int(d) for d in x_shape[1:] if d is not None)


def _from_datasets(source: str, spec: DataSpec, values: dict[str, Any]) -> Splits:
    train_ds = values["train"]
    if "validation" not in values:
        if not _is_dataset(train_ds):
            raise DataError(
                source, "train: mix of arrays and datasets; give every split as a tf.data.Dataset"
            )
        batches = int(train_ds.cardinality())
        if batches < 2:
            raise DataError(
                source,
                "the train dataset's size is unknown or under 2 batches, so validation_split cannot "
                'hold part of it out; return a "validation" dataset too',
            )
        n_val = max(1, round(batches * spec.validation_split))
        values = {**values, "train": train_ds.skip(n_val), "validation": train_ds.take(n_val)}
    parts: dict[str, Part] = {}
    labels: list[np.ndarray] = []
    shape: tuple[int, ...] = ()
    for name in ("train", "validation", "test"):
        if name in values:
            parts[name], y, x_shape = _dataset_part(source, name, values[name])
            labels.append(y)
            shape = shape or x_shape
    task = infer_task(source, spec, shape, labels)
    return Splits(parts["train"], parts["validation"], parts.get("test"), task, source)
