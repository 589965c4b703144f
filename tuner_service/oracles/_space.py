"""A vector view of a keras-tuner search space for the fast Bayesian optimization oracle.

Each non-fixed hyperparameter is one coordinate in ``[0, 1]``, the same embedding keras-tuner
uses (``hp.value_to_prob`` / ``hp.prob_to_value``), so a point means the same thing to us and to
stock keras-tuner. On top of that:

* Discrete hyperparameters (``Choice``, ``Boolean``, ``Int``, ``Float`` with a step) keep the
  exact list of their allowed values; points are snapped to that grid, so every candidate we
  score is a value a trial can actually run, and duplicates are detected exactly.
* Unordered choices (string ``Choice``) are marked categorical: the kernel sees "same or
  different", not a made-up order.
* Inactive or missing hyperparameters (conditions, entries added after a trial) take the
  hyperparameter's default, as stock keras-tuner does, so "the same model" is "the same vector".

Only public keras-tuner API is used here (``HyperParameters.space``, ``hp.conditions``,
``hp.values``, ``value_to_prob``/``prob_to_value``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import keras_tuner
import numpy as np
from keras_tuner.engine import hyperparameters as hp_types

# A discrete hyperparameter with more values than this is treated as continuous (and snapped
# only when decoded), to keep the grid arrays small.
MAX_GRID_VALUES = 4096
# Continuous coordinates are compared at this resolution when looking for duplicates.
_CONT_DECIMALS = 6


@dataclass(frozen=True)
class Dim:
    """One coordinate: a non-fixed hyperparameter and its grid (``None`` when continuous)."""

    hp: Any
    categorical: bool
    grid: np.ndarray | None  # sorted probs of the allowed values
    default_prob: float

    @property
    def name(self) -> str:
        return self.hp.name


def _allowed_values(hp) -> list | None:
    """The finite list of values a hyperparameter can take, or None when continuous/huge."""
    if isinstance(hp, (hp_types.Choice, hp_types.Boolean)):
        return list(hp.values)
    if isinstance(hp, hp_types.Int) and hp.step is None:
        # A log-sampled Int without a step: every integer in the range.
        n = hp.max_value - hp.min_value + 1
        return list(range(hp.min_value, hp.max_value + 1)) if n <= MAX_GRID_VALUES else None
    if isinstance(hp, (hp_types.Int, hp_types.Float)) and hp.step is not None:
        values = []
        for v in hp.values:  # a generator over the stepped range
            values.append(v)
            if len(values) > MAX_GRID_VALUES:
                return None
        return values
    return None


class SpaceCodec:
    """Encode trials as vectors, snap/sample/perturb vectors, and decode them back to values."""

    def __init__(self, hyperparameters: keras_tuner.HyperParameters):
        self.space = list(hyperparameters.space)
        dims = []
        for hp in self.space:
            if isinstance(hp, hp_types.Fixed):
                continue
            values = _allowed_values(hp)
            grid = None
            if values is not None:
                grid = np.unique(np.array([hp.value_to_prob(v) for v in values], dtype=float))
            categorical = isinstance(hp, hp_types.Choice) and not hp.ordered and len(hp.values) > 2
            dims.append(Dim(hp, categorical, grid, float(hp.value_to_prob(hp.default))))
        self.dims = dims
        self.d = len(dims)
        self.names = [dim.name for dim in dims]
        self.conditional = any(dim.hp.conditions for dim in dims)
        self.default = np.array([dim.default_prob for dim in dims], dtype=float)
        self._disc = [i for i, dim in enumerate(dims) if dim.grid is not None]
        self._cont = [i for i, dim in enumerate(dims) if dim.grid is None]
        self.categorical = np.array([dim.categorical for dim in dims], dtype=bool)
        self._cat_sizes = [len(dims[i].grid) for i in range(self.d) if dims[i].categorical]
        self.grid_size = math.prod(len(dims[i].grid) for i in self._disc) if not self._cont else math.inf

    @staticmethod
    def signature(hyperparameters: keras_tuner.HyperParameters) -> tuple:
        """Changes whenever the space's hyperparameters change (so the codec must be rebuilt)."""
        return tuple((id(hp), hp.name) for hp in hyperparameters.space)

    # --- trials <-> vectors ------------------------------------------------------------------

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """A trial's values as a vector; inactive or missing entries take the default."""
        x = self.default.copy()
        for i, dim in enumerate(self.dims):
            hp = dim.hp
            if hp.name in values and all(c.is_active(values) for c in hp.conditions):
                try:
                    x[i] = hp.value_to_prob(values[hp.name])
                except (ValueError, TypeError, ZeroDivisionError):
                    pass  # a value outside today's space: treat as default
        return self.snap(x[None, :])[0]

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        """A vector as active values, walking the space in order as keras-tuner does."""
        values: dict[str, Any] = {}
        col = {dim.name: i for i, dim in enumerate(self.dims)}
        for hp in self.space:
            if not all(c.is_active(values) for c in hp.conditions):
                continue
            if isinstance(hp, hp_types.Fixed):
                values[hp.name] = hp.value
            else:
                prob = float(np.clip(x[col[hp.name]], 0.0, 1.0 - 1e-12))
                values[hp.name] = hp.prob_to_value(prob)
        return values

    def canonical(self, x: np.ndarray) -> np.ndarray:
        """Sets inactive coordinates to their defaults (only matters for conditional spaces)."""
        if not self.conditional:
            return x
        return self.encode(self.decode(x))

    # --- grid operations (vectorised) --------------------------------------------------------

    def snap(self, X: np.ndarray) -> np.ndarray:
        """Moves every discrete coordinate to its nearest allowed value."""
        X = np.clip(np.asarray(X, dtype=float), 0.0, 1.0)
        for i in self._disc:
            grid = self.dims[i].grid
            if len(grid) == 1:
                X[:, i] = grid[0]
                continue
            mids = (grid[1:] + grid[:-1]) / 2.0
            X[:, i] = grid[np.searchsorted(mids, X[:, i])]
        return X

    def keys(self, X: np.ndarray) -> list[bytes]:
        """Hashable identities of snapped points (equal key = same trial)."""
        R = np.round(np.asarray(X, dtype=float), _CONT_DECIMALS) + 0.0  # no -0.0
        return [row.tobytes() for row in R]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform random points of the space (grid points for discrete coordinates)."""
        X = rng.random((n, self.d))
        for i in self._disc:
            grid = self.dims[i].grid
            X[:, i] = grid[rng.integers(0, len(grid), n)]
        return X

    def enumerate_grid(self) -> np.ndarray:
        """Every point of a fully discrete space (call only when ``grid_size`` is small)."""
        grids = [self.dims[i].grid for i in range(self.d)]
        mesh = np.meshgrid(*grids, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def neighbours(self, X: np.ndarray, steps: Iterable[float] = (0.02, 0.08, 0.25)) -> np.ndarray:
        """Every point that differs from a row of ``X`` in exactly one coordinate.

        Discrete coordinates move to each other allowed value; continuous ones move by
        ``+-steps``.
        """
        out = []
        for i in range(self.d):
            grid = self.dims[i].grid
            moves = grid if grid is not None else None
            if moves is not None:
                block = np.repeat(X, len(moves), axis=0)
                block[:, i] = np.tile(moves, len(X))
                keep = block[:, i] != np.repeat(X[:, i], len(moves))
                out.append(block[keep])
            else:
                deltas = np.array([s * sign for s in steps for sign in (-1.0, 1.0)])
                block = np.repeat(X, len(deltas), axis=0)
                block[:, i] = np.clip(block[:, i] + np.tile(deltas, len(X)), 0.0, 1.0)
                out.append(block)
        if not out:
            return np.empty((0, self.d))
        return np.concatenate(out, axis=0)

    def perturb(self, X: np.ndarray, rng: np.random.Generator, per_point: int) -> np.ndarray:
        """Random points near each row of ``X``: about two coordinates changed per point."""
        if len(X) == 0 or self.d == 0:
            return np.empty((0, self.d))
        base = np.repeat(X, per_point, axis=0)
        m = len(base)
        change = rng.random((m, self.d)) < min(1.0, 2.0 / self.d)
        change[np.arange(m), rng.integers(0, self.d, m)] = True  # at least one
        fresh = self.sample(rng, m)
        cont = np.zeros(self.d, dtype=bool)
        cont[self._cont] = True
        # Continuous coordinates move locally rather than jump.
        local = np.clip(base + rng.normal(0.0, 0.1, (m, self.d)), 0.0, 1.0)
        fresh = np.where(cont[None, :], local, fresh)
        return np.where(change, fresh, base)

    # --- the GP's view ----------------------------------------------------------------------

    def gp_inputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Splits points into (ordinal coordinates, categorical indices) for the kernel."""
        X = np.asarray(X, dtype=float)
        ordinal = X[:, ~self.categorical]
        cats = []
        for i in np.flatnonzero(self.categorical):
            grid = self.dims[i].grid
            cats.append(np.searchsorted(grid, X[:, i] - 1e-9))
        cat = np.stack(cats, axis=1) if cats else np.zeros((len(X), 0), dtype=int)
        return ordinal, cat

    @property
    def cat_sizes(self) -> list[int]:
        return list(self._cat_sizes)
