"""What the labels say: the task (classification or regression), their checks, the split."""

from __future__ import annotations

import numpy as np

from tuner_service.data.core import DataError, Task
from tuner_service.spec import DataSpec


def split_train_val(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, *, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of (x, y); stratified: each class keeps its share in both parts."""
    rng = np.random.default_rng(seed)
    if stratify:
        val_idx: list[np.ndarray] = []
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            val_idx.append(idx[: max(1, round(len(idx) * fraction))])
        val = np.sort(np.concatenate(val_idx))
    else:
        val = np.sort(rng.permutation(len(y))[: max(1, round(len(y) * fraction))])
    train = np.setdiff1d(np.arange(len(y)), val)
    return x[train], y[train], x[val], y[val]


def _is_one_hot(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) and bool((y.sum(1) == 1).all())


def class_labels(y: np.ndarray) -> np.ndarray:
    """Integer class of each sample, from integer or one-hot labels."""
    return np.argmax(y, axis=1) if _is_one_hot(y) else y.reshape(len(y), -1)[:, 0]


def infer_task(source: str, spec: DataSpec, input_shape: tuple[int, ...], labels: list[np.ndarray]) -> Task:
    """The task the labels pose (``data.task`` decides when set); bad labels raise DataError."""
    y = labels[0]
    one_hot = _is_one_hot(y)
    integral = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    if spec.task == "classification" and not (one_hot or integral):
        flat = np.concatenate([lab.reshape(-1) for lab in labels])
        if not np.all(np.mod(flat, 1) == 0):
            bad = flat[np.mod(flat, 1) != 0][0]
            raise DataError(source, f"labels out of range for classification: {bad} is not a class number")
        integral = True
    if spec.task == "regression" or not (one_hot or integral):
        outputs = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
        return Task("regression", input_shape, outputs=outputs)
    if not one_hot and y.ndim > 1 and int(np.prod(y.shape[1:])) != 1:
        raise DataError(
            source, f"labels of shape {y.shape[1:]} per sample: expected one class number or a one-hot row"
        )
    classes = [class_labels(lab) for lab in labels]
    low = min(int(c.min()) for c in classes)
    high = max(int(c.max()) for c in classes)
    num_classes = y.shape[1] if one_hot else (spec.num_classes or high + 1)
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(
            source,
            f"labels out of range for classification: found label {bad}, expected 0..{num_classes - 1}"
            + (" (data.num_classes)" if spec.num_classes else ""),
        )
    if num_classes < 2:
        raise DataError(source, "only one class in the labels: classification needs at least two")
    return Task("classification", input_shape, num_classes=int(num_classes), one_hot=one_hot)
