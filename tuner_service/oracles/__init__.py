"""Oracles for the chief: keras-tuner oracles that decide fast enough to serve many workers.

``FastBayesianOptimizationOracle`` is a drop-in for ``keras_tuner.oracles.BayesianOptimizationOracle``
(see ``docs/oracle.md``).
"""

from tuner_service.oracles.bayesian import FastBayesianOptimizationOracle

__all__ = ["FastBayesianOptimizationOracle"]
