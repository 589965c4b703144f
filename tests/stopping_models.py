"""Tiny hypermodels for early-stopping tests (imported by the chief and workers as ``module:attr``)."""

from __future__ import annotations

import keras


def learns_or_not(hp) -> keras.Model:
    """learning_rate 0 never learns (chance accuracy): an obviously unpromising trial."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [0.01, 0.0])),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
