"""Datasets: Fashion-MNIST through the unmodified Keras loader, split and scaled as the seed does.

The Keras loader downloads into ``$KERAS_HOME`` on a machine with internet and reads that cache
offline. Workers call :func:`load` once per process, never once per trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner_service.spec import DataSpec

NUM_CLASSES = 10


class DataError(Exception):
    """The dataset could not be loaded (no cache and no internet, corrupt files...)."""


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays: images (N, 28, 28, 1) in [0, 1], one-hot targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def _prepare(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from keras.utils import to_categorical

    images = (x.astype("float32") / 255.0)[..., np.newaxis]
    return images, to_categorical(y, NUM_CLASSES).astype("float32")


def split_train_val(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified hold-out: each class keeps the same share in train and validation."""
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        val_idx.append(idx[: max(1, round(len(idx) * fraction))])
    val = np.sort(np.concatenate(val_idx))
    train = np.setdiff1d(np.arange(len(y)), val)
    return x[train], y[train], x[val], y[val]


def load(spec: DataSpec, seed: int | None = None) -> Splits:
    """Load the study's dataset; the split depends only on ``seed`` so every process agrees."""
    import keras

    try:
        (x, y), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # the loader raises many kinds (URLError, OSError, EOFError...)
        raise DataError(
            f"cannot load Fashion-MNIST ({type(err).__name__}: {err}). Without internet, point "
            "KERAS_HOME at a folder holding datasets/fashion-mnist/ (see README)."
        ) from err
    seed = 0 if seed is None else seed
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, spec.validation_split, seed)
    if spec.max_train_samples is not None and len(x_tr) > spec.max_train_samples:
        keep = np.random.default_rng(seed).permutation(len(x_tr))[: spec.max_train_samples]
        x_tr, y_tr = x_tr[np.sort(keep)], y_tr[np.sort(keep)]
    return Splits(*_prepare(x_tr, y_tr), *_prepare(x_val, y_val), *_prepare(x_test, y_test))
