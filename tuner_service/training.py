"""Fit and test a model on the study's data: the one way, for workers, the chief and experiments.

* :func:`search_inputs`: what ``tuner.search`` / ``model.fit`` get (arrays, the seed's cached
  ``tf.data`` pipeline, or the source's own datasets); workers and benchmarks use it.
* :func:`fit`: keras-tuner's whole ``HyperModel.fit`` contract: ``fit()`` may return a
  ``History``, a dict of metrics or a float (the objective), as keras-tuner accepts.
* :func:`evaluate`: the test metrics the model was compiled with
  (``evaluate(..., return_dict=True)``), plus per-sample correctness (classification) or error
  (regression) for the paired baseline comparison (:mod:`tuner_service.significance`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner_service.data import Part, Splits, Task


def search_inputs(
    splits: Splits, batch_size: int, *, tf_data: bool = False, seed: int | None = None
) -> tuple[tuple, dict[str, Any]]:
    """Positional and keyword arguments of ``tuner.search``/``model.fit`` (no epochs, callbacks).

    ``tf_data`` turns arrays into a ``tf.data`` pipeline built once (see compute.datasets).
    """
    train, val = splits.train, splits.val
    if train.is_arrays and val.is_arrays and tf_data:
        from tuner_service import compute

        ds_train, ds_val = compute.datasets(train.x, train.y, val.x, val.y, batch_size, seed)
        return (ds_train,), {"validation_data": ds_val, "shuffle": False}  # the pipeline shuffles
    args, kwargs = train.fit_inputs(batch_size)
    return args, {**kwargs, "validation_data": val.validation_data()}


def final_metrics(result: Any, objective: str) -> dict[str, float]:
    """The metrics a ``fit()`` returned: last epoch of a History, a dict, or a float (the objective)."""
    history = getattr(result, "history", None)
    if isinstance(history, dict):
        return {k: float(v[-1]) for k, v in history.items() if len(v)}
    if isinstance(result, dict):
        out = {}
        for key, value in result.items():
            value = value[-1] if isinstance(value, list | tuple) and value else value
            if isinstance(value, int | float | np.number):
                out[str(key)] = float(value)
        return out
    if isinstance(result, int | float | np.number):
        return {objective: float(result)}
    return {}


def fit(
    fit_fn: Callable[..., Any],
    model: Any,
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    objective: str,
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:
    """``fit_fn(model, *inputs, epochs=..., ...)`` (a HyperModel's fit or ``model.fit``); its metrics."""
    args, kwargs = search_inputs(splits, batch_size)
    result = fit_fn(model, *args, epochs=epochs, verbose=0, callbacks=list(callbacks), **kwargs)
    return final_metrics(result, objective)


@dataclass(frozen=True)
class Evaluation:
    """A model tested: its compiled metrics, and one entry per test sample."""

    metrics: dict[str, float]
    correct: np.ndarray | None = None  # classification: the prediction was right
    errors: np.ndarray | None = None  # regression: mean absolute error of the sample

    @property
    def size(self) -> int:
        per_sample = self.correct if self.correct is not None else self.errors
        return 0 if per_sample is None else len(per_sample)


def _class_of(values: np.ndarray) -> np.ndarray:
    """Predicted or true class per sample: argmax of rows, a threshold for one sigmoid output."""
    values = np.asarray(values)
    if values.ndim > 1 and values.shape[-1] > 1:
        return np.argmax(values, axis=-1).reshape(len(values))
    flat = values.reshape(len(values))
    return flat if np.issubdtype(flat.dtype, np.integer) else (flat > 0.5).astype("int64")


def per_sample(model: Any, part: Part, task: Task, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(correct, errors) per test sample, in one pass so predictions and labels stay aligned."""
    correct, errors = [], []
    for x, y in part.batches(batch_size):
        pred = np.asarray(model.predict_on_batch(x))
        y = np.asarray(y)
        if task.is_classification:
            if task.one_hot or (y.ndim > 1 and y.shape[-1] > 1):
                truth = np.argmax(y, axis=-1)
            else:
                truth = y.reshape(len(y)).astype("int64")
            correct.append(_class_of(pred) == truth)
        else:
            diff = np.abs(pred.reshape(len(y), -1) - y.reshape(len(y), -1))
            errors.append(diff.mean(axis=1))
    return (
        np.concatenate(correct) if correct else np.zeros(0, bool),
        np.concatenate(errors) if errors else np.zeros(0),
    )


def evaluate(model: Any, part: Part, task: Task, batch_size: int) -> Evaluation:
    """Test ``model`` on ``part`` with the metrics it was compiled with."""
    args, kwargs = part.fit_inputs(batch_size)
    raw = model.evaluate(*args, verbose=0, return_dict=True, **kwargs)
    metrics = {str(k): float(v) for k, v in raw.items() if np.ndim(v) == 0}
    correct, errors = per_sample(model, part, task, batch_size)
    if task.is_classification:
        return Evaluation(metrics, correct=correct)
    return Evaluation(metrics, errors=errors)


def fit_and_test(
    fit_fn: Callable[..., Any],
    model: Any,
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    objective: str,
) -> tuple[dict[str, Any], Evaluation | None]:
    """Fit, then test on the test split if the source has one: the record and the evaluation.

    The record keeps the older keys (``test_accuracy``, ``test_loss``, ``val_accuracy``) where
    the model logs them, beside ``test_metrics`` and ``val_metrics``.
    """
    start = time.time()
    fitted = fit(fit_fn, model, splits, epochs=epochs, batch_size=batch_size, objective=objective)
    record: dict[str, Any] = {
        "epochs": epochs,
        "val_metrics": {k: v for k, v in fitted.items() if k.startswith("val_") or k == objective},
        "val_accuracy": _finite(fitted.get("val_accuracy")),
    }
    evaluation = None
    if splits.test is not None and len(splits.test):
        evaluation = evaluate(model, splits.test, splits.task, batch_size)
        record["test_metrics"] = evaluation.metrics
        record["test_size"] = evaluation.size
        for key in ("accuracy", "loss"):
            if key in evaluation.metrics:
                record[f"test_{key}"] = evaluation.metrics[key]
    record["train_seconds"] = round(time.time() - start, 2)
    return record, evaluation


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
