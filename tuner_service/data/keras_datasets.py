"""Keras' built-in datasets through the unmodified loader, cached in ``$KERAS_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

from tuner_service.data.arrays import from_arrays
from tuner_service.data.core import DataError, Splits
from tuner_service.spec import DataSpec

# Keras' built-in datasets with (x, y) arrays (keras.datasets.<name>.load_data()).
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "boston_housing", "california_housing")
# Where each loader keeps its download under $KERAS_HOME/datasets (a glob).
KERAS_CACHE = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist/train-images-idx3-ubyte.gz",
    "cifar10": "cifar-10-batches-py*",
    "cifar100": "cifar-100-python*",
    "boston_housing": "boston_housing.npz",
    "california_housing": "california_housing.npz",
}


def keras_cache_present(name: str) -> bool:
    """Whether the Keras loader's download of ``name`` is visibly in its cache (no TensorFlow).

    Only a shortcut for :func:`check`: when in doubt it says no and the loader itself runs.
    """
    pattern = KERAS_CACHE.get(name)
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return pattern is not None and any((home / "datasets").glob(pattern))


def dataset_name(source: str, name: str) -> str:
    """``name`` if Keras has such a dataset, else DataError."""
    if name not in KERAS_DATASETS:
        raise DataError(source, f"unknown Keras dataset {name!r}; known: {', '.join(KERAS_DATASETS)}")
    return name


def load(source: str, name: str, spec: DataSpec, seed: int) -> Splits:
    """The loader's train and test arrays: images scaled, labels one-hot (as the seed did)."""
    import keras

    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as err:  # noqa: BLE001 - the loader raises many kinds (URLError, OSError...)
        raise DataError(
            source,
            f"the Keras loader failed ({type(err).__name__}: {err}); without internet, point "
            "KERAS_HOME at a folder holding the loader's cache (datasets/...), see README",
        ) from None
    return from_arrays(source, spec, seed, {"train": (x, y), "test": (x_test, y_test)}, one_hot_labels=True)
