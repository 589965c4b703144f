"""Arrays into splits (Keras loaders, npz files, user functions of arrays), and npz files."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tuner_service.data.core import DataError, Part, Splits
from tuner_service.data.labels import class_labels, infer_task, split_train_val
from tuner_service.spec import DataSpec


def _as_images(x: np.ndarray) -> np.ndarray:
    """Uint8 arrays are images: float32 in [0, 1], with a channel axis when they have none."""
    if x.dtype != np.uint8:
        return x
    images = x.astype("float32") / 255.0
    return images[..., np.newaxis] if images.ndim == 3 else images


def _check_pair(source: str, name: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = np.asarray(x), np.asarray(y)
    except Exception as err:  # noqa: BLE001 - whatever the user's objects raise
        raise DataError(source, f"{name}: cannot be read as arrays ({err})") from None
    for label, arr in (("x", x), ("y", y)):
        if arr.ndim == 0:
            raise DataError(source, f"{label}_{name} is a scalar, not one row per sample")
        if not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
            raise DataError(source, f"{label}_{name} is not numeric (dtype {arr.dtype})")
    if len(x) != len(y):
        raise DataError(source, f"x_{name} has {len(x)} samples but y_{name} has {len(y)}")
    if len(x) == 0:
        raise DataError(source, f"{name} is empty (0 samples)")
    return x, y


def from_arrays(
    source: str,
    spec: DataSpec,
    seed: int,
    pairs: dict[str, tuple[Any, Any]],
    *,
    one_hot_labels: bool = False,
) -> Splits:
    """Splits from ``{"train": (x, y), "validation": ..., "test": ...}`` arrays, checked.

    ``one_hot_labels`` turns integer class labels into one-hot rows (the Keras sources, as the
    seed did); other sources keep labels as they come.
    """
    checked = {name: _check_pair(source, name, *xy) for name, xy in pairs.items() if xy is not None}
    shape = checked["train"][0].shape[1:]
    for name, (x, _) in checked.items():
        if x.shape[1:] != shape:
            raise DataError(source, f"x_{name} samples have shape {x.shape[1:]} but x_train's have {shape}")
    task = infer_task(source, spec, shape, [y for _, y in checked.values()])
    x, y = checked["train"]
    if "validation" in checked:
        x_val, y_val = checked["validation"]
    else:
        # Split indices, stratified by class: the same split for integer and one-hot labels.
        strata = class_labels(y) if task.is_classification else np.arange(len(y))
        tr, _, va, _ = split_train_val(
            np.arange(len(y)), strata, spec.validation_split, seed, stratify=task.is_classification
        )
        x, y, x_val, y_val = x[tr], y[tr], x[va], y[va]
        if len(x) == 0:
            raise DataError(
                source, f"train is too small to hold out validation_split {spec.validation_split}"
            )
    if spec.max_train_samples is not None and len(x) > spec.max_train_samples:
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[: spec.max_train_samples])
        x, y = x[keep], y[keep]
    parts = {"train": (x, y), "validation": (x_val, y_val)}
    if "test" in checked:
        parts["test"] = checked["test"]
    if one_hot_labels and task.is_classification and not task.one_hot:
        parts = {k: (xs, _one_hot(ys, task.num_classes or 0)) for k, (xs, ys) in parts.items()}
        task = replace(task, one_hot=True)
    parts = {k: (_as_images(xs), ys) for k, (xs, ys) in parts.items()}
    if parts["train"][0].shape[1:] != task.input_shape:
        task = replace(task, input_shape=parts["train"][0].shape[1:])
    test = Part.of_arrays(*parts["test"]) if "test" in parts else None
    return Splits(Part.of_arrays(*parts["train"]), Part.of_arrays(*parts["validation"]), test, task, source)


def _one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    labels = y.reshape(len(y), -1)[:, 0].astype("int64")
    out = np.zeros((len(labels), num_classes), dtype="float32")
    out[np.arange(len(labels)), labels] = 1.0
    return out


def npz_arrays(source: str, path: str, spec: DataSpec) -> dict[str, tuple[Any, Any] | None]:
    file = Path(path)
    if not file.is_file():
        raise DataError(source, f"no such file: {file}")
    names = {
        role: spec.keys.get(role, role)
        for role in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    }
    try:
        with np.load(file, allow_pickle=False) as npz:
            held = sorted(npz.files)
            arrays = {role: npz[key] for role, key in names.items() if key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(source, f"not a readable .npz file ({err})") from None
    for role in ("x_train", "y_train"):
        if role not in arrays:
            hint = "" if role in spec.keys else f"; name yours with data.keys, e.g. {{{role}: <name>}}"
            raise DataError(source, f"no array {names[role]!r} (the file holds {held}){hint}")
    pairs: dict[str, tuple[Any, Any] | None] = {"train": (arrays["x_train"], arrays["y_train"])}
    for split, short in (("validation", "val"), ("test", "test")):
        x, y = arrays.get(f"x_{short}"), arrays.get(f"y_{short}")
        if (x is None) != (y is None):
            missing = names[f"x_{short}"] if x is None else names[f"y_{short}"]
            raise DataError(source, f"has {split} {'labels' if x is None else 'inputs'} but no {missing!r}")
        pairs[split] = None if x is None else (x, y)
    return pairs
