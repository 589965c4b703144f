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

import importlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuner_service.spec import DataSpec

# Keras' built-in datasets with (x, y) arrays (keras.datasets.<name>.load_data()).
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "boston_housing", "california_housing")
# What image_dataset_from_directory reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
IMAGE_SPLITS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


class DataError(Exception):
    """The study's data cannot be used: ``data <source>: <problem>``."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"data {source!r}: {problem}")


@dataclass(frozen=True)
class Task:
    """What the data asks of a model: the seed's hypermodels shape their input and output by it."""

    kind: Literal["classification", "regression"]
    input_shape: tuple[int, ...]
    num_classes: int | None = None  # classification: labels 0..num_classes-1
    one_hot: bool = False  # classification labels are one-hot rows (else integers)
    outputs: int = 1  # regression targets per sample

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"


FASHION_MNIST = Task("classification", (28, 28, 1), num_classes=10, one_hot=True)


@dataclass(frozen=True)
class Part:
    """One split: arrays ``x``, ``y``, or a batched ``tf.data.Dataset`` of ``(x, y)``."""

    x: Any = None
    y: Any = None
    dataset: Any = None
    size: int = 0

    @classmethod
    def of_arrays(cls, x: np.ndarray, y: np.ndarray) -> Part:
        return cls(x=x, y=y, size=len(x))

    @property
    def is_arrays(self) -> bool:
        return self.dataset is None

    def __len__(self) -> int:
        return self.size

    def fit_inputs(self, batch_size: int) -> tuple[tuple, dict[str, Any]]:
        """Positional and keyword arguments of ``model.fit`` / ``evaluate`` for this split."""
        if self.is_arrays:
            return (self.x, self.y), {"batch_size": batch_size}
        return (self.dataset,), {}

    def validation_data(self) -> Any:
        return (self.x, self.y) if self.is_arrays else self.dataset

    def batches(self, batch_size: int) -> Iterator[tuple[Any, np.ndarray]]:
        """``(x, y)`` batches in a fixed order (predictions and labels stay aligned)."""
        if self.is_arrays:
            for start in range(0, self.size, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
        else:
            for x, y in self.dataset:
                yield x, np.asarray(y)


@dataclass(frozen=True)
class Splits:
    """Train, validation and (when the source has one) test data, and the task they pose."""

    train: Part
    val: Part
    test: Part | None
    task: Task
    source: str = "keras:fashion_mnist"

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test or Part())}

    # Arrays by name, for sources that give arrays (the seed's data does).
    @property
    def x_train(self) -> Any:
        return self.train.x

    @property
    def y_train(self) -> Any:
        return self.train.y

    @property
    def x_val(self) -> Any:
        return self.val.x

    @property
    def y_val(self) -> Any:
        return self.val.y

    @property
    def x_test(self) -> Any:
        return None if self.test is None else self.test.x

    @property
    def y_test(self) -> Any:
        return None if self.test is None else self.test.y


# -- splitting ---------------------------------------------------------------------------------
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


# -- tasks and label checks ----------------------------------------------------------------------
def _is_one_hot(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) and bool((y.sum(1) == 1).all())


def _class_labels(y: np.ndarray) -> np.ndarray:
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
    classes = [_class_labels(lab) for lab in labels]
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


# -- arrays (keras:, npz:, user functions) ----------------------------------------------------------
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
        strata = _class_labels(y) if task.is_classification else np.arange(len(y))
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


def _keras(source: str, name: str, spec: DataSpec, seed: int) -> Splits:
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


def _npz_arrays(source: str, path: str, spec: DataSpec) -> dict[str, tuple[Any, Any] | None]:
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


# -- image folders ------------------------------------------------------------------------------------
def _image_trees(source: str, root: Path) -> dict[str, Path]:
    """``{"train": dir, ...}``: ``<root>`` itself, or its train/validation/test sub-trees."""
    if not root.is_dir():
        raise DataError(source, f"no such directory: {root}")
    found = {
        split: next((root / n for n in names if (root / n).is_dir()), None)
        for split, names in IMAGE_SPLITS.items()
    }
    if found["train"] is not None and found["test"] is not None:
        return {k: v for k, v in found.items() if v is not None}
    return {"train": root}


def _count_images(source: str, tree: Path) -> dict[str, int]:
    """Images per class folder; a tree without classes or images raises DataError."""
    classes = sorted(p for p in tree.iterdir() if p.is_dir())
    if not classes:
        raise DataError(source, f"{tree} has no class folders (expected {tree}/<class>/<image files>)")
    counts = {
        c.name: sum(1 for f in c.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        for c in classes
    }
    if not sum(counts.values()):
        kinds = ", ".join(IMAGE_EXTENSIONS)
        raise DataError(source, f"no images ({kinds}) in the class folders of {tree}")
    return counts


def _check_images(source: str, directory: str) -> dict[str, dict[str, int]]:
    trees = _image_trees(source, Path(directory))
    counts = {split: _count_images(source, tree) for split, tree in trees.items()}
    for split, per_class in counts.items():
        if split != "train" and set(per_class) - set(counts["train"]):
            extra = sorted(set(per_class) - set(counts["train"]))
            raise DataError(source, f"{split} has classes {extra} that train has not")
    if len(counts["train"]) < 2:
        raise DataError(source, "only one class folder: classification needs at least two")
    return counts


def _images(source: str, directory: str, spec: DataSpec, seed: int, batch_size: int) -> Splits:
    import keras

    counts = _check_images(source, directory)
    trees = _image_trees(source, Path(directory))
    class_names = sorted(counts["train"])
    common = {
        "labels": "inferred",
        "label_mode": "int",
        "class_names": class_names,
        "color_mode": spec.color_mode,
        "image_size": tuple(spec.image_size),
        "batch_size": batch_size,
        "seed": seed,
        "verbose": False,
    }
    total = sum(counts["train"].values())
    try:
        if "validation" in trees:
            train = keras.utils.image_dataset_from_directory(trees["train"], shuffle=True, **common)
            val = keras.utils.image_dataset_from_directory(trees["validation"], shuffle=False, **common)
            n_val = sum(counts["validation"].values())
        else:
            train, val = keras.utils.image_dataset_from_directory(
                trees["train"], validation_split=spec.validation_split, subset="both", shuffle=True, **common
            )
            n_val = int(spec.validation_split * total)
            total -= n_val
        test = None
        if "test" in trees:
            test = keras.utils.image_dataset_from_directory(trees["test"], shuffle=False, **common)
    except (ValueError, OSError) as err:
        raise DataError(source, f"cannot read the image folder ({err})") from None
    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}[spec.color_mode]
    task = Task("classification", (*spec.image_size, channels), num_classes=len(class_names))

    def part(ds: Any, size: int) -> Part:
        return Part(dataset=ds.map(lambda x, y: (x / 255.0, y)), size=size)

    return Splits(
        part(train, total),
        part(val, n_val),
        None if test is None else part(test, sum(counts["test"].values())),
        task,
        source,
    )


# -- user functions -----------------------------------------------------------------------------------
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


def _user(source: str, spec: DataSpec, seed: int) -> Splits:
    returned = _call_user_function(source)
    if not isinstance(returned, dict) or "train" not in returned:
        raise DataError(
            source,
            f"the data function returned a {type(returned).__name__}; expected a dict "
            '{"train": ..., "validation": ... (optional), "test": ... (optional)}',
        )
    unknown = sorted(set(returned) - set(IMAGE_SPLITS))
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


# -- entry points ---------------------------------------------------------------------------------------
def _kind(source: str) -> tuple[str, str]:
    prefix, _, rest = source.partition(":")
    if prefix in ("keras", "npz", "images"):
        return prefix, rest
    return "function", source


def check(spec: DataSpec, seed: int | None = None, *, call_function: bool = True) -> None:
    """Every problem that shows without starting TensorFlow (``run`` calls it before any process).

    npz files are loaded and checked whole, image folders for classes and images, Keras names
    against the known loaders; a user function is called (it imports what it needs) unless
    ``call_function`` is False (the chief, whose :func:`load` calls it next). The chief's
    :func:`load` checks the rest before it serves.
    """
    kind, rest = _kind(spec.source)
    if kind == "keras":
        if not keras_cache_present(_keras_name(spec.source, rest)):
            # No cache to read: try the loader now (it downloads with internet), so an offline
            # machine gets the loader's error here rather than in the chief's log.
            _keras(spec.source, rest, spec, 0 if seed is None else seed)
    elif kind == "npz":
        from_arrays(spec.source, spec, 0 if seed is None else seed, _npz_arrays(spec.source, rest, spec))
    elif kind == "images":
        _check_images(spec.source, rest)
    elif call_function:
        _user(spec.source, spec, 0 if seed is None else seed)


# Where each Keras loader keeps its download under $KERAS_HOME/datasets (a glob).
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
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return any((home / "datasets").glob(KERAS_CACHE.get(name, "\0")))


def _keras_name(source: str, name: str) -> str:
    if name not in KERAS_DATASETS:
        raise DataError(source, f"unknown Keras dataset {name!r}; known: {', '.join(KERAS_DATASETS)}")
    return name


def load(spec: DataSpec, seed: int | None = None, batch_size: int = 128) -> Splits:
    """Load the study's data; the split depends only on ``seed`` so every process agrees."""
    seed = 0 if seed is None else seed
    kind, rest = _kind(spec.source)
    if kind == "keras":
        return _keras(spec.source, _keras_name(spec.source, rest), spec, seed)
    if kind == "npz":
        return from_arrays(spec.source, spec, seed, _npz_arrays(spec.source, rest, spec))
    if kind == "images":
        return _images(spec.source, rest, spec, seed, batch_size)
    return _user(spec.source, spec, seed)
