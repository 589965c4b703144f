"""The study's objective: its name and which way is better, decided in one place.

Every reader (the oracle, the final retrain, ``results``, the report, ``experiment``) asks this
module, so the direction can never disagree between them. The direction is the study's
explicit one (``objective: {name: val_mae, direction: min}``), or else inferred from the metric
name with keras-tuner's own rule (``keras_tuner.engine.metrics_tracking.infer_metric_direction``:
losses and errors ``min``, accuracies, AUC, precision, recall ``max``), the rule keras-tuner
itself applies to a plain string objective.

>>> Objective("val_mae", "min").better(0.2, 0.3)
True
>>> Objective("val_accuracy", "max").best([0.7, 0.9, None])
0.9
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import keras_tuner

    from tuner_service.spec import StudySpec

Direction = Literal["min", "max"]


class ObjectiveError(Exception):
    """The objective's direction cannot be told from its name and the study gives none."""


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Direction

    @property
    def maximise(self) -> bool:
        return self.direction == "max"

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b``."""
        return a > b if self.maximise else a < b

    def best(self, scores: Iterable[float | None]) -> float | None:
        """The best finite score, or None."""
        finite = [s for s in scores if s is not None and math.isfinite(s)]
        if not finite:
            return None
        return max(finite) if self.maximise else min(finite)

    def to_keras_tuner(self) -> keras_tuner.Objective:
        import keras_tuner

        return keras_tuner.Objective(self.name, self.direction)


def infer_direction(metric: str) -> Direction | None:
    """keras-tuner's rule for a metric name (``val_`` prefix allowed); None if it cannot tell."""
    from keras_tuner.engine.metrics_tracking import infer_metric_direction

    return infer_metric_direction(metric)


def of_name(name: str, direction: str | None = None) -> Objective:
    """The objective ``name`` with an explicit ``direction``, or the inferred one."""
    if direction in ("min", "max"):
        return Objective(name, direction)  # type: ignore[arg-type]
    inferred = infer_direction(name)
    if inferred is None:
        raise ObjectiveError(
            f"objective {name!r}: cannot tell whether to minimise or maximise it; "
            f"write `objective: {{name: {name}, direction: min}}` (or max) in the study file"
        )
    return Objective(name, inferred)


def of_study(spec: StudySpec) -> Objective:
    """The study's objective (imports keras-tuner when the direction must be inferred)."""
    return of_name(spec.objective, spec.objective_direction)


def of_results(results: dict) -> Objective:
    """The objective recorded in a ``results.json`` (older files: inferred from the name)."""
    return of_name(results.get("objective") or "val_loss", results.get("objective_direction"))


def recorded_direction(spec: StudySpec) -> Direction | None:
    """The direction keras-tuner recorded for the objective in the study's trial files, if any."""
    from tuner_service.study import files

    for path in files.StudyDir(spec.project_dir).trial_files():
        trial = files.read_json(path)
        metrics = ((trial or {}).get("metrics") or {}).get("metrics") or {}
        direction = (metrics.get(spec.objective) or {}).get("direction")
        if direction in ("min", "max"):
            return direction
    return None


def direction_of(spec: StudySpec, results: dict | None = None) -> Direction:
    """The direction for a reader of a study: the one its results or the study file state, the
    one its trial files recorded, else inferred (only then is keras-tuner imported)."""
    if results and results.get("objective_direction") in ("min", "max"):
        return results["objective_direction"]
    if spec.objective_direction is not None:
        return spec.objective_direction
    return recorded_direction(spec) or of_study(spec).direction
