"""Hypermodels for the fault-injection tests, loaded by the worker processes as
``tests.fault.fault_models:SlowMLP`` (the study's ``model: module:attr``).

``FAULT_EPOCH_SECONDS`` stretches every epoch so a test can kill or stop a worker mid-trial;
``FAULT_FAIL_FIRST=N`` with ``FAULT_COUNTER=<file>`` makes the first N fits (counted across
processes) raise, like a bug in a user's model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import keras_tuner


class _Pace(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_begin(self, epoch, logs=None):
        time.sleep(self.seconds)


def _maybe_fail() -> None:
    first = int(os.environ.get("FAULT_FAIL_FIRST", "0"))
    if not first:
        return
    counter = Path(os.environ["FAULT_COUNTER"])
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if n <= first:
        raise ValueError(f"injected failure {n}: the user's model is broken")


class SlowMLP(keras_tuner.HyperModel):
    def build(self, hp):
        model = keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Flatten(),
                keras.layers.Dense(hp.Int("units", 16, 128, step=16), activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        _maybe_fail()
        pace = _Pace(float(os.environ.get("FAULT_EPOCH_SECONDS", "0")))
        return model.fit(*args, callbacks=[pace, *(callbacks or [])], **kwargs)


class BrokenInWorkers(SlowMLP):
    """Fine in the chief (and in `run`'s own check), but every worker fails at start-up, as when
    its data or storage cannot be read: the chief is left with no worker."""

    def __init__(self) -> None:
        super().__init__()
        if os.environ.get("KERASTUNER_TUNER_ID", "").startswith("worker"):
            raise OSError("injected: the worker cannot read its data")


class RefusedByChief(SlowMLP):
    """Fine in `run`'s own check and in workers; the chief refuses it as bad input (exit 2), as it
    refuses a study another chief holds: `run` must say why and exit 2 at once."""

    def __init__(self) -> None:
        super().__init__()
        if os.environ.get("KERASTUNER_TUNER_ID") == "chief":
            raise TypeError("injected: the chief refuses this model")


class BrokenForSomeValues(SlowMLP):
    """``build`` raises for one value of a hyperparameter, its default included: the chief's own
    build at start-up (keras-tuner declares the space with the defaults) meets it first."""

    def build(self, hp):
        if hp.Choice("activation", ["unsupported", "relu"]) == "unsupported":
            raise ValueError("activation 'unsupported' is not implemented in this model")
        return super().build(hp)
