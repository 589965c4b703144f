"""A user hypermodel whose trials take a fixed time: the benchmark's stand-in for training.

``build`` returns a one-weight Keras model (keras-tuner insists on a model); ``fit`` sleeps
``SLEEPY_SECONDS`` (default 2) and returns a deterministic score, so end-to-end wall time
measures the chief and the protocol, not TensorFlow. When ``SLEEPY_LOG`` names a file, every
trial appends ``<start> <end>`` (epoch seconds) to it: the benchmark reads the last trial's end
from there, the same way for stock keras-tuner and for tuner-service.

Used by study files as ``model: bench.sleepy:SleepyHyperModel``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import keras
import keras_tuner

SECONDS_ENV = "SLEEPY_SECONDS"
LOG_ENV = "SLEEPY_LOG"


def score(x: float, units: int, optimizer: str) -> float:
    """A smooth synthetic 'validation accuracy' in (0, 1), best near x=0.3, units=200, adam."""
    bonus = 0.05 if optimizer == "adam" else 0.0
    return 0.8 * math.exp(-((x - 0.3) ** 2) - ((units - 200) / 300) ** 2) + bonus


class SleepyHyperModel(keras_tuner.HyperModel):
    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        hp.Float("x", -1.0, 1.0)
        hp.Int("units", 50, 350, step=50)
        hp.Choice("optimizer", ["sgd", "adam"])
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> dict:
        start = time.time()
        time.sleep(float(os.environ.get(SECONDS_ENV, "2")))
        end = time.time()
        log = os.environ.get(LOG_ENV)
        if log:
            # One short O_APPEND write per trial: atomic across worker processes.
            with open(log, "a") as f:
                f.write(f"{start:.6f} {end:.6f}\n")
        return {"val_accuracy": score(hp.get("x"), hp.get("units"), hp.get("optimizer"))}
