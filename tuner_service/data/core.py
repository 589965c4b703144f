"""The study's data as every process holds it: splits (arrays or datasets) and the task they pose."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")


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
