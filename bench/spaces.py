"""The seed's search spaces and cheap synthetic objectives defined over them.

The spaces are the seed's exactly (SEED.md; names are fixed, the hypermodels use the same ones).
The per-layer hyperparameters are declared unconditionally, as a for-loop over ``range(3)``
would, so every trial carries all of them; the objectives ignore the ones of absent layers.

The objectives stand in for validation accuracy (to maximise) so regret can be measured without
training. They are deterministic, have interactions (optimizer x learning rate, dropout x
capacity, layer width x previous layer, padding x depth x filters, dense units x filters), an
interior optimum that is not at a corner of the grid, and an optional Gaussian noise whose draw
depends only on ``(seed, evaluation index)`` so two oracles driven with the same seed see the same
noise sequence. The exact optimum is found by enumerating the grid (18,522 MLP points, 4,608 CNN).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras_tuner
import numpy as np

Values = Mapping[str, Any]


def mlp_space() -> keras_tuner.HyperParameters:
    """The seed's MLP space, every per-layer hyperparameter declared."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("dropout", [0.0, 0.1, 0.2])
    hp.Int("n_layers", 1, 3)
    for i in range(3):
        hp.Int(f"units_{i}", 50, 350, step=50)
    hp.Choice("optimizer", ["sgd", "adam"])
    hp.Choice("learning_rate", [0.1, 0.01, 0.001])
    return hp


def cnn_space() -> keras_tuner.HyperParameters:
    """The seed's CNN space, every per-block hyperparameter declared."""
    hp = keras_tuner.HyperParameters()
    hp.Int("n_blocks", 1, 3)
    for i in range(3):
        hp.Choice(f"filters_{i}", [32, 64])
        hp.Choice(f"padding_{i}", ["valid", "same"])
    hp.Int("dense_units", 25, 150, step=25)
    hp.Choice("optimizer", ["sgd", "adam"])
    hp.Choice("learning_rate", [0.01, 0.001])
    return hp


# --- MLP ------------------------------------------------------------------------------------

_MLP_OPT_LR = {
    ("adam", 0.001): 0.0,
    ("adam", 0.01): -0.012,
    ("adam", 0.1): -0.095,
    ("sgd", 0.1): -0.007,
    ("sgd", 0.01): -0.004,
    ("sgd", 0.001): -0.028,
}


def mlp_objective(v: Values) -> float:
    """Noiseless synthetic 'validation accuracy' of the seed MLP (higher is better)."""
    n = int(v["n_layers"])
    units = [int(v[f"units_{i}"]) for i in range(n)]
    dropout = float(v["dropout"])
    score = 0.85
    # First layer: wide is good, with an interior optimum near 250 units.
    score -= 0.012 * math.log(units[0] / 250.0) ** 2
    # Deeper layers help when they funnel (about 0.6x the previous width).
    if n >= 2:
        score += 0.008 - 0.010 * math.log(units[1] / (0.6 * units[0])) ** 2
    if n >= 3:
        score += 0.003 - 0.010 * math.log(units[2] / (0.6 * units[1])) ** 2
    # The best dropout grows with capacity.
    capacity = min(sum(units) / 500.0, 1.0)
    best_dropout = 0.2 * capacity
    score -= 0.010 * ((dropout - best_dropout) / 0.1) ** 2
    # Optimizer x learning rate; a large SGD step hurts deeper networks more.
    opt, lr = str(v["optimizer"]), float(v["learning_rate"])
    score += _MLP_OPT_LR[(opt, lr)]
    if opt == "sgd" and lr == 0.1:
        score -= 0.006 * (n - 1)
    return score


def mlp_effective(v: Values) -> dict[str, Any]:
    """The values that change the MLP model; those of absent layers are None."""
    n = int(v["n_layers"])
    out = {k: v[k] for k in ("n_layers", "dropout", "optimizer", "learning_rate")}
    out.update({f"units_{i}": (v[f"units_{i}"] if i < n else None) for i in range(3)})
    return out


# --- CNN ------------------------------------------------------------------------------------

_CNN_OPT_LR = {
    ("adam", 0.001): 0.0,
    ("adam", 0.01): -0.009,
    ("sgd", 0.01): -0.003,
    ("sgd", 0.001): -0.020,
}


def _cnn_spatial(v: Values) -> int:
    size = 28
    for i in range(int(v["n_blocks"])):
        if v[f"padding_{i}"] == "valid":
            size -= 2
        size //= 2
    return size


def cnn_objective(v: Values) -> float:
    """Noiseless synthetic 'validation accuracy' of the seed CNN (higher is better)."""
    n = int(v["n_blocks"])
    filters = [int(v[f"filters_{i}"]) for i in range(n)]
    score = 0.885 + {1: 0.0, 2: 0.010, 3: 0.016}[n]
    # Filters that grow block after block are best (as the seed found); shrinking ones hurt.
    for i in range(1, n):
        if filters[i] > filters[i - 1]:
            score += 0.004
        elif filters[i] < filters[i - 1]:
            score -= 0.006
        if filters[i] == 64:
            score += 0.002
    if v["padding_0"] == "same":
        score += 0.002
    # Padding x depth x filters: the flattened feature count has an interior optimum.
    flat = filters[-1] * max(_cnn_spatial(v), 0) ** 2
    score -= 0.004 * math.log(max(flat, 1) / 576.0) ** 2
    # Dense units x last filters.
    dense = int(v["dense_units"])
    score -= 0.02 * math.log(dense / (25 + 1.5 * filters[-1])) ** 2
    score += _CNN_OPT_LR[(str(v["optimizer"]), float(v["learning_rate"]))]
    return score


def cnn_effective(v: Values) -> dict[str, Any]:
    """The values that change the CNN model; those of absent blocks are None."""
    n = int(v["n_blocks"])
    out = {k: v[k] for k in ("n_blocks", "dense_units", "optimizer", "learning_rate")}
    for i in range(3):
        out[f"filters_{i}"] = v[f"filters_{i}"] if i < n else None
        out[f"padding_{i}"] = v[f"padding_{i}"] if i < n else None
    return out


# --- common ---------------------------------------------------------------------------------


def grid(space: keras_tuner.HyperParameters) -> list[dict]:
    """Every point of a fully discrete, unconditional space."""
    names = [hp.name for hp in space.space]
    value_lists = [list(hp.values) for hp in space.space]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*value_lists)]


@dataclass(frozen=True)
class Problem:
    """A search space with a synthetic objective (to maximise) and its exact optimum."""

    name: str
    make_space: Callable[[], keras_tuner.HyperParameters]
    objective: Callable[[Values], float]
    effective: Callable[[Values], dict[str, Any]]

    @functools.cached_property
    def optimum(self) -> float:
        return max(self.objective(v) for v in grid(self.make_space()))

    @functools.cached_property
    def worst(self) -> float:
        return min(self.objective(v) for v in grid(self.make_space()))

    def model_key(self, values: Values) -> tuple:
        """Equal for two configurations that build the same model."""
        return tuple(sorted(self.effective(values).items()))

    def model_distance(self, a: Values, b: Values) -> int:
        """How many of the model-changing hyperparameters differ (absent layers count)."""
        ea, eb = self.effective(a), self.effective(b)
        return sum(ea[k] != eb[k] for k in ea)

    def noisy(self, values: Values, seed: int, index: int, noise: float) -> float:
        """The objective plus Gaussian noise drawn from ``(seed, index)`` only."""
        value = self.objective(values)
        if noise > 0:
            value += noise * float(np.random.default_rng([seed, index]).standard_normal())
        return value


PROBLEMS = {
    "mlp": Problem("mlp", mlp_space, mlp_objective, mlp_effective),
    "cnn": Problem("cnn", cnn_space, cnn_objective, cnn_effective),
}
