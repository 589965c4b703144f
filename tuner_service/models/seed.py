"""The seed experiment's hypermodels and untuned baselines (see SEED.md).

The search spaces are exactly the seed's; their names are part of the results format, so do not
rename them. Input shape and output follow the study's data (:class:`tuner_service.data.Task`):
any number of classes, integer or one-hot labels, or regression (a linear output, MSE loss, MAE
metric); Fashion-MNIST (28x28x1, 10 one-hot classes) when no task is given.

The per-layer hyperparameters are declared inside a for-loop over
``hp.Int("n_layers" | "n_blocks")`` as the seed does, so deeper layers appear in the space once
some trial has used them.
"""

from __future__ import annotations

import keras
import keras_tuner

from tuner_service.data import FASHION_MNIST, Task

CNN_DROPOUT = 0.25  # the seed's CNN blocks end in dropout; its rate is not searched


def _optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def _head(task: Task) -> keras.layers.Layer:
    if task.is_classification:
        return keras.layers.Dense(task.num_classes, activation="softmax")
    return keras.layers.Dense(task.outputs)


def _compile(model: keras.Model, optimizer: str, learning_rate: float, task: Task) -> keras.Model:
    if task.is_classification:
        loss = "categorical_crossentropy" if task.one_hot else "sparse_categorical_crossentropy"
        metrics = ["accuracy"]
    else:
        loss, metrics = "mean_squared_error", ["mae"]
    model.compile(optimizer=_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics)
    return model


class _SeedHyperModel(keras_tuner.HyperModel):
    def __init__(self, task: Task | None = None, **kwargs: object):
        super().__init__(**kwargs)
        self.task = task or FASHION_MNIST


class SeedMLP(_SeedHyperModel):
    """Dense network: 1-3 hidden layers of 50-350 units, one dropout rate, SGD or Adam."""

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = keras.Sequential([keras.Input(self.task.input_shape), keras.layers.Flatten()])
        dropout = hp.Choice("dropout", [0.0, 0.1, 0.2])
        for i in range(hp.Int("n_layers", 1, 3)):
            model.add(keras.layers.Dense(hp.Int(f"units_{i}", 50, 350, step=50), "relu"))
            model.add(keras.layers.Dropout(dropout))
        model.add(_head(self.task))
        return _compile(
            model,
            hp.Choice("optimizer", ["sgd", "adam"]),
            hp.Choice("learning_rate", [0.1, 0.01, 0.001]),
            self.task,
        )


class SeedCNN(_SeedHyperModel):
    """Blocks of conv + max-pool + dropout (the search picks how many), then a dense layer."""

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = keras.Sequential([keras.Input(self.task.input_shape)])
        for i in range(hp.Int("n_blocks", 1, 3)):
            model.add(
                keras.layers.Conv2D(
                    hp.Choice(f"filters_{i}", [32, 64]),
                    kernel_size=3,
                    padding=hp.Choice(f"padding_{i}", ["valid", "same"]),
                    activation="relu",
                )
            )
            model.add(keras.layers.MaxPooling2D(2))
            model.add(keras.layers.Dropout(CNN_DROPOUT))
        model.add(keras.layers.Flatten())
        model.add(keras.layers.Dense(hp.Int("dense_units", 25, 150, step=25), "relu"))
        model.add(_head(self.task))
        return _compile(
            model,
            hp.Choice("optimizer", ["sgd", "adam"]),
            hp.Choice("learning_rate", [0.01, 0.001]),
            self.task,
        )


def baseline_mlp(task: Task | None = None) -> keras.Model:
    """The seed's hand-built MLP: one hidden layer, no dropout, Adam at its default rate."""
    task = task or FASHION_MNIST
    model = keras.Sequential(
        [
            keras.Input(task.input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            _head(task),
        ]
    )
    return _compile(model, "adam", 0.001, task)


def baseline_cnn(task: Task | None = None) -> keras.Model:
    """The seed's baseline CNN: a single block of 32 filters + pooling, then a dense layer."""
    task = task or FASHION_MNIST
    model = keras.Sequential(
        [
            keras.Input(task.input_shape),
            keras.layers.Conv2D(32, kernel_size=3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="relu"),
            _head(task),
        ]
    )
    return _compile(model, "adam", 0.001, task)


HYPERMODELS = {"mlp": SeedMLP, "cnn": SeedCNN}
BASELINES = {"mlp": baseline_mlp, "cnn": baseline_cnn}
