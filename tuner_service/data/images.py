"""Class-per-folder image trees through ``keras.utils.image_dataset_from_directory``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner_service.data.core import DataError, Part, Splits, Task
from tuner_service.spec import DataSpec

# What image_dataset_from_directory reads.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Sub-trees holding ready-made splits (used when train/ and test/ are both there).
IMAGE_SPLITS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


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


def check(source: str, directory: str) -> dict[str, dict[str, int]]:
    """Images per class folder of each split tree; DataError for a tree that cannot be used."""
    trees = _image_trees(source, Path(directory))
    counts = {split: _count_images(source, tree) for split, tree in trees.items()}
    for split, per_class in counts.items():
        if split != "train" and set(per_class) - set(counts["train"]):
            extra = sorted(set(per_class) - set(counts["train"]))
            raise DataError(source, f"{split} has classes {extra} that train has not")
    if len(counts["train"]) < 2:
        raise DataError(source, "only one class folder: classification needs at least two")
    return counts


def load(source: str, directory: str, spec: DataSpec, seed: int, batch_size: int) -> Splits:
    """Batched datasets of the tree(s), pixels in [0, 1]; validation_split when no validation/."""
    import keras

    counts = check(source, directory)
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
