"""The only place our oracles touch keras-tuner internals (names starting with ``_``).

keras-tuner 1.4.x has no public way to do these two things; each is a one-line call so a
keras-tuner upgrade breaks here, loudly, and nowhere else. ``tests/test_oracle_bayesian.py``
exercises both (``test_private_keras_tuner_hooks``).

* ``Oracle._random_values()`` draws a random, not-yet-tried point from the base oracle's seeded
  sequence. Stock ``BayesianOptimizationOracle`` and ``RandomSearchOracle`` use it for their
  random phase; calling it too gives us *the same* initial design as stock for the same seed, so
  a benchmark compares the model-based phases alone.
* ``Oracle._set_project_dir(directory, name)`` is how ``keras_tuner.Tuner`` attaches an oracle to
  its storage; benchmarks and tests drive oracles without a Tuner and need it.
"""

from __future__ import annotations

from typing import Any

import keras_tuner


def random_values(oracle: keras_tuner.Oracle) -> dict[str, Any] | None:
    """A random untried point from the oracle's seeded sequence (None if none is left)."""
    return oracle._random_values()


def attach_project_dir(oracle: keras_tuner.Oracle, directory: str, project_name: str) -> None:
    """Attaches storage as ``keras_tuner.Tuner`` does (trial files and ``oracle.json``)."""
    oracle._set_project_dir(directory, project_name)
