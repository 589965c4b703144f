"""The worker's side of the SIGTERM hand-over (tuner_service/handover.py), in process.

Where a stop request is honoured: after the epoch backup when the epoch ends in time, at once when
it would not, before asking for a trial; and that keras-tuner's search ends without ending the
trial, so its backup is left for the next worker. The real-process test is in test_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from tuner_service import checkpoints
from tuner_service.handover import HandedOver, Handover
from tuner_service.tuners import ServiceTuner


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _epoch(point, clock: Clock, epoch: int, seconds: float, batches: int = 4) -> None:
    point.on_epoch_begin(epoch)
    for batch in range(batches):
        clock.now += seconds / batches
        point.on_train_batch_end(batch)
    point.on_epoch_end(epoch)


def test_epoch_that_ends_in_time_is_finished_and_backed_up_first():
    clock = Clock()
    handover = Handover(finish_within=20, clock=clock)
    handover.searching = True
    point = handover.stop_point("07")
    point.on_train_begin()
    _epoch(point, clock, 0, seconds=8)
    point.on_epoch_begin(1)
    clock.now += 1
    handover.request()  # 7 s of an 8 s epoch left: it ends within 20 s
    for batch in range(4):
        clock.now += 1.75
        point.on_train_batch_end(batch)
    with pytest.raises(HandedOver, match="after epoch 2 \\(backed up\\)") as stop:
        point.on_epoch_end(1)
    assert stop.value.trial_id == "07"


def test_epoch_that_would_end_too_late_stops_at_the_next_batch():
    clock = Clock()
    handover = Handover(finish_within=20, clock=clock)
    handover.searching = True
    point = handover.stop_point("07")
    _epoch(point, clock, 0, seconds=60)
    point.on_epoch_begin(1)
    clock.now += 5
    handover.request()  # 55 s of a 60 s epoch left
    with pytest.raises(HandedOver, match="in epoch 2, which would not end within 20s"):
        point.on_train_batch_end(0)


def test_first_epoch_of_unknown_length_gets_the_whole_bound():
    clock = Clock()
    handover = Handover(finish_within=20, clock=clock)
    handover.searching = True
    point = handover.stop_point("07")
    point.on_epoch_begin(0)
    handover.request()
    clock.now += 19
    point.on_train_batch_end(0)  # may still end in time
    clock.now += 1
    with pytest.raises(HandedOver, match="in epoch 1"):
        point.on_train_batch_end(1)


def test_before_the_search_a_signal_stops_at_once_and_during_it_only_marks():
    handover = Handover(clock=Clock())
    with pytest.raises(HandedOver, match="before the search started") as stop:
        handover.request()
    assert stop.value.trial_id is None
    handover = Handover(clock=Clock())
    handover.searching = True
    handover.request()  # e.g. in the middle of an RPC: nothing is interrupted
    assert handover.requested
    with pytest.raises(HandedOver, match="between trials"):
        handover.check(None, "between trials")


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)


def test_search_ends_without_ending_the_trial_and_leaves_its_backup(tmp_path: Path):
    """SIGTERM in epoch 2 of 4: keras-tuner's search ends after that epoch's backup; the trial is
    neither ended nor scored, and the backup holds 2 epochs for the next worker."""
    handover = Handover(finish_within=20)
    handover.searching = True

    def build(hp):
        hp.Int("units", 2, 8)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    def sigterm_in_epoch_2(trial, epoch, logs):
        if epoch == 1:
            handover.request()  # as the signal handler does

    tuner = ServiceTuner(
        oracle=keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=2, seed=1
        ),
        hypermodel=build,
        directory=str(tmp_path),
        project_name="p",
        epoch_hooks=[sigterm_in_epoch_2],
        backups=True,
        handover=handover,
    )
    x, y = _data()
    with pytest.raises(HandedOver, match="after epoch 2 \\(backed up\\)") as stop:
        tuner.search(x, y, validation_data=(x, y), epochs=4, batch_size=8, verbose=0)
    trial = tuner.oracle.get_trial(stop.value.trial_id)
    assert trial.status == "RUNNING" and trial.score is None  # not ended: the chief hands it on
    backup = checkpoints.backup_dir(tuner.get_trial_dir(trial.trial_id), 0)
    assert checkpoints.completed_epochs(backup) == 2
    assert len(tuner.oracle.trials) == 1  # it did not ask for another
