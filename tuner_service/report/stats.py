"""The numbers behind the plots, kept apart from matplotlib so they can be tested: robust axis
limits, how a hyperparameter maps onto an axis, and parameter importance.

>>> lim = robust_limits([0.80, 0.81, 0.82, 0.83, 0.78, 0.11])
>>> round(lim.lo, 3), round(lim.hi, 3), lim.outliers
(0.777, 0.833, [0.11])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Tukey's fence (a box plot's whiskers): a value more than FENCE interquartile ranges outside the
# middle half is drawn clipped at the axis edge, so one diverged trial does not squash the rest.
FENCE = 1.5
PAD = 0.06  # of the span, either side, so points do not sit on the frame
MIN_IMPORTANCE_TRIALS = 5  # below this a forest fitted to the trials says nothing
GRID_POINTS = 16  # values of a hyperparameter at which its main effect is evaluated


@dataclass(frozen=True)
class Limits:
    lo: float
    hi: float
    outliers: list[float] = field(default_factory=list)  # values outside [lo, hi], drawn at the edge

    def clip(self, value: float) -> float:
        return min(max(value, self.lo), self.hi)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(sorted_values) - 1)
    return sorted_values[i] + (sorted_values[j] - sorted_values[i]) * (pos - i)


def robust_limits(values: Sequence[float], fence: float = FENCE) -> Limits:
    """Axis limits that fit the bulk of ``values``; far-out values are listed as outliers.

    The bulk is everything within ``fence`` interquartile ranges of the quartiles; the limits
    are its extent plus a little padding. With fewer than 4 values nothing is an outlier.
    """
    xs = sorted(v for v in values if math.isfinite(v))
    if not xs:
        return Limits(0.0, 1.0)
    inside = xs
    if len(xs) >= 4:
        q1, q3 = _quantile(xs, 0.25), _quantile(xs, 0.75)
        iqr = q3 - q1
        inside = [v for v in xs if q1 - fence * iqr <= v <= q3 + fence * iqr]
    lo, hi = inside[0], inside[-1]
    span = hi - lo or max(abs(hi) * 0.05, 1e-3)
    lo, hi = lo - PAD * span, hi + PAD * span
    return Limits(lo, hi, [v for v in xs if v < lo or v > hi])


# -- hyperparameters on an axis ------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """How one hyperparameter's values map onto a plot axis.

    ``numeric`` values are drawn at their value (never moved: dropout 0.0 is drawn at 0.0), on a
    log scale when they span more than a factor LOG_SPAN; other values are categories drawn at
    their index in ``categories``.
    """

    name: str
    numeric: bool
    log: bool = False
    categories: tuple[str, ...] = ()

    def position(self, value: Any) -> float:
        """The value on this axis: its number (log10 on a log axis) or its category index."""
        if self.numeric:
            return math.log10(value) if self.log else float(value)
        return float(self.categories.index(str(value)))


LOG_SPAN = 20.0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def natural(text: str) -> tuple[int, float | str]:
    """Sort key: numbers by value, then text."""
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def axis_for(name: str, values: Sequence[Any]) -> Axis:
    if values and all(_is_number(v) for v in values):
        positive = all(v > 0 for v in values)
        log = positive and max(values) / min(values) >= LOG_SPAN
        return Axis(name, numeric=True, log=log)
    return Axis(name, numeric=False, categories=tuple(sorted({str(v) for v in values}, key=natural)))


# -- parameter importance --------------------------------------------------------------------------
@dataclass(frozen=True)
class Importance:
    shares: dict[str, float]  # hyperparameter -> share of the explained variance (sums to 1)
    trials: int
    method: str = (
        "a random forest (scikit-learn) fitted to the completed trials; "
        "a hyperparameter's share is the variance of its partial dependence, its first-order effect "
        "as fANOVA (Optuna's default importance) measures it, here averaged over the trials rather "
        "than over the whole search space"
    )


def importance(
    hyperparameters: Sequence[dict[str, Any]], scores: Sequence[float], seed: int = 0
) -> Importance | None:
    """Each hyperparameter's share of the objective's variation, or None with too few trials.

    A hyperparameter a trial does not use (a layer beyond its depth) is encoded as a value below
    every real one, so "not used" is a level of its own. Hyperparameters that never vary are left out.
    """
    if len(scores) < MIN_IMPORTANCE_TRIALS:
        return None
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor

    names = sorted({k for hp in hyperparameters for k in hp})
    columns = []
    for name in names:
        present = [hp[name] for hp in hyperparameters if name in hp]
        axis = axis_for(name, present)
        coded = [axis.position(hp[name]) if name in hp else math.nan for hp in hyperparameters]
        known = [c for c in coded if not math.isnan(c)]
        unused = min(known) - 1 - (max(known) - min(known))
        columns.append([unused if math.isnan(c) else c for c in coded])
    x = np.array(columns, dtype=float).T
    varying = [j for j in range(len(names)) if len(set(x[:, j])) > 1]
    if not varying:
        return None
    x = x[:, varying]
    y = np.asarray(scores, dtype=float)
    forest = RandomForestRegressor(n_estimators=128, random_state=seed, min_samples_leaf=1).fit(x, y)
    effects = []
    for j in range(x.shape[1]):
        grid, weights = _grid(x[:, j])
        partial = []
        for v in grid:
            probe = x.copy()
            probe[:, j] = v
            partial.append(forest.predict(probe).mean())
        partial_arr = np.asarray(partial)
        mean = np.average(partial_arr, weights=weights)
        effects.append(float(np.average((partial_arr - mean) ** 2, weights=weights)))
    total = sum(effects)
    if total <= 0:
        return None
    return Importance({names[j]: e / total for j, e in zip(varying, effects, strict=True)}, len(scores))


def _grid(column: Any) -> tuple[list[float], list[float]]:
    """The values at which a main effect is evaluated, weighted as the trials sampled them."""
    import numpy as np

    values, counts = np.unique(column, return_counts=True)
    if len(values) <= GRID_POINTS:
        return list(values), list(counts)
    return list(np.quantile(column, np.linspace(0, 1, GRID_POINTS))), [1.0] * GRID_POINTS
