"""Resume, not restart: a trial interrupted mid-fit continues from its last epoch, and keras-tuner
scores it exactly as if it had never been interrupted. Plus atomic state files under SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from keras_tuner.src.engine import tuner_utils

from tests.helpers import wait_for
from tuner_service import checkpoints

EPOCHS = 5


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    return x, y


def _model() -> keras.Model:
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch: int):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("worker preempted")


def _fit(model: keras.Model, trial_dir: Path, extra=()) -> keras.callbacks.History:
    x, y = _data()
    return model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=EPOCHS,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[*extra, *checkpoints.fit_callbacks(trial_dir, 0)],
    )


def test_interrupted_fit_resumes_and_scores_like_an_uninterrupted_one(tmp_path):
    straight = _fit(_model(), tmp_path / "straight")

    trial_dir = tmp_path / "moved"
    with pytest.raises(RuntimeError, match="preempted"):
        _fit(_model(), trial_dir, extra=[_Crash(at_epoch=3)])
    assert checkpoints.completed_epochs(checkpoints.backup_dir(trial_dir, 0)) == 3

    # Another worker: a fresh model (different init), the same trial directory.
    keras.utils.set_random_seed(99)
    callbacks = checkpoints.fit_callbacks(trial_dir, 0)
    x, y = _data()
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    seen: list[int] = []
    trace = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    resumed = model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=EPOCHS,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[trace, *callbacks],
    )
    assert seen == [3, 4]  # only the epochs that were missing
    assert callbacks[0].resumed_from == 3
    assert resumed.epoch == list(range(EPOCHS))
    for key, values in straight.history.items():
        np.testing.assert_allclose(resumed.history[key], values, rtol=1e-5, err_msg=key)

    objective = keras_tuner_objective()
    assert tuner_utils.convert_to_metrics_dict(resumed, objective) == pytest.approx(
        tuner_utils.convert_to_metrics_dict(straight, objective)
    )
    assert tuner_utils.get_best_step(resumed, objective) == tuner_utils.get_best_step(straight, objective)


def test_history_ahead_of_the_backup_is_cut_back_on_resume(tmp_path):
    """A kill between the two writes of an epoch leaves history.json one epoch ahead of the
    weights: the resumed trial retrains that epoch, and the epoch's stale logs never count."""
    trial_dir = tmp_path / "moved"
    with pytest.raises(RuntimeError, match="preempted"):
        _fit(_model(), trial_dir, extra=[_Crash(at_epoch=3)])
    backup = checkpoints.backup_dir(trial_dir, 0)
    logs = json.loads((backup / checkpoints.HISTORY).read_text())
    assert sorted(logs) == ["0", "1", "2"] and checkpoints.completed_epochs(backup) == 3
    # Epoch 3's logs reached the disk, its weights did not (the process died in between).
    stale = {key: 123.0 for key in logs["2"]}
    (backup / checkpoints.HISTORY).write_text(json.dumps({**logs, "3": stale}))

    callbacks = checkpoints.fit_callbacks(trial_dir, 0)
    assert callbacks[0].resumed_from == 0  # nothing restored before fit starts
    x, y = _data()
    resumed = _model().fit(
        x,
        y,
        validation_data=(x, y),
        epochs=EPOCHS,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    assert callbacks[0].resumed_from == 3
    assert resumed.epoch == list(range(EPOCHS))
    assert 123.0 not in resumed.history["val_loss"]
    on_disk = json.loads((backup / checkpoints.HISTORY).read_text())
    assert sorted(on_disk) == [str(e) for e in range(EPOCHS)] and on_disk["3"] != stale


def keras_tuner_objective():
    import keras_tuner

    return keras_tuner.Objective("val_loss", "min")


def test_finished_execution_is_not_trained_again(tmp_path):
    """A trial that moves during its second execution keeps its first one as it was."""
    first = _fit(_model(), tmp_path)
    again = _fit(_model(), tmp_path)  # same execution directory, already complete
    assert again.epoch == first.epoch and again.history.keys() == first.history.keys()
    for key, values in first.history.items():
        np.testing.assert_allclose(again.history[key], values, err_msg=key)


def test_backups_of_ended_trials_are_removed(tmp_path):
    for trial_id in ("0", "1"):
        (tmp_path / f"trial_{trial_id}" / "backup" / "execution_0").mkdir(parents=True)
    assert checkpoints.remove_ended(tmp_path, running={"1"}) == ["0"]
    assert not (tmp_path / "trial_0" / "backup").exists() and (tmp_path / "trial_1" / "backup").exists()


_WRITER = """
import sys
from tuner_service import compat
from keras_tuner.src import utils
if sys.argv[2] == "atomic":
    compat.install_atomic_json()
big = {"trials": {str(i): {"values": list(range(200))} for i in range(3000)}}
print("ready", flush=True)
while True:
    utils.save_json(sys.argv[1], big)
"""


@pytest.mark.e2e
def test_state_file_survives_sigkill_mid_write(tmp_path):
    """keras-tuner's save_json truncates then writes; ours never leaves a half-written file."""
    path = tmp_path / "oracle.json"
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), "atomic"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        # A whole file exists (the first write, slow on a loaded machine), then kill the writer
        # at a random moment of a later write: the file must still be whole.
        wait_for(path.exists, "the first write", 60)
        time.sleep(np.random.default_rng().uniform(0.1, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert len(json.loads(path.read_text())["trials"]) == 3000


def test_service_tuner_backs_up_each_execution_and_cleans_up(tmp_path):
    """compat.FitCallbacks: one backup directory per execution, removed when the trial ends."""
    import keras_tuner

    from tuner_service.tuners import ServiceTuner

    seen: list[tuple[str, int, list[str]]] = []

    def hook(trial, epoch, logs):
        backups = tmp_path / "p" / f"trial_{trial.trial_id}" / "backup"
        seen.append((trial.trial_id, epoch, sorted(p.name for p in backups.glob("*"))))

    def build(hp):
        hp.Int("units", 2, 8)
        return _model()

    tuner = ServiceTuner(
        oracle=keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("val_loss", "min"), max_trials=1, seed=1
        ),
        hypermodel=build,
        directory=str(tmp_path),
        project_name="p",
        executions_per_trial=2,
        epoch_hooks=[hook],
        backups=True,
    )
    x, y = _data()
    tuner.search(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=0)
    # The hook runs before the epoch's backup is written: execution_1 appears during its 2nd epoch.
    assert [s[2] for s in seen] == [[], ["execution_0"], ["execution_0"], ["execution_0", "execution_1"]]
    assert not (tmp_path / "p" / "trial_0" / "backup").exists()
    assert tuner.oracle.get_trial("0").status == "COMPLETED"
