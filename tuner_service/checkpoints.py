"""Per-trial training state on the shared storage, so a moved or restarted trial resumes.

Every execution of a trial (``executions_per_trial``) trains with Keras' own
``keras.callbacks.BackupAndRestore`` writing to ``<trial dir>/backup/execution_<k>/`` after every
epoch: weights, optimizer state and epoch number, in Keras' format. A worker that gets the trial
later (its lease ran out, or its pod restarted with the same tuner id) finds the backup and
continues from the last completed epoch.

Keras' ``History`` only knows the epochs trained by *this* ``fit``, and keras-tuner scores a
trial from it (best epoch). So the per-epoch logs are kept beside the backup
(``history.json``) and put back in front of the resumed run's history: the trial's score is the
same as if it had never moved.

Backups are removed by the worker that ends the trial (completed, failed, or sent for a retry
after an error, which therefore starts again from epoch 0), and by the chief at the end of the
search for trials that ended some other way.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import keras

from tuner_service.study import files

log = logging.getLogger(__name__)

BACKUP_DIR = files.BACKUP
HISTORY = files.BACKUP_HISTORY
METADATA = files.BACKUP_METADATA


def backup_dir(trial_dir: str | Path, execution: int) -> Path:
    return Path(trial_dir) / BACKUP_DIR / f"execution_{execution}"


def completed_epochs(directory: str | Path) -> int:
    """Epochs saved in a backup directory (0 when there is none)."""
    try:
        return int(json.loads((Path(directory) / METADATA).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class ResumedHistory(keras.callbacks.History):
    """A ``History`` that starts with the epochs trained before the trial moved.

    Given to ``fit`` in its callbacks, it is the History that ``fit`` returns (Keras uses the
    one it is given instead of adding its own).
    """

    def __init__(self) -> None:
        super().__init__()
        self.restored: dict[int, dict[str, float]] = {}  # epoch -> its logs

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self.history = {}
        for epoch, epoch_logs in sorted(self.restored.items()):
            self.epoch.append(epoch)
            for key, value in epoch_logs.items():
                self.history.setdefault(key, []).append(value)
        self.model.history = self  # fit returns it even when no epoch is left to train


class TrialBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that also keeps the per-epoch logs for :class:`ResumedHistory`."""

    def __init__(self, directory: str | Path, history: ResumedHistory):
        super().__init__(
            backup_dir=str(directory),
            save_freq="epoch",
            double_checkpoint=True,  # a write cut by SIGKILL falls back to the previous epoch
            delete_checkpoint=False,  # removed when the whole trial ends (see module docstring)
        )
        self.directory = Path(directory)
        self.resumed_history = history
        self.resumed_from = 0
        self._logs: dict[int, dict[str, float]] = {}  # epoch -> logs (Hyperband may start > 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.model.built:
            # Keras restores only into a built model (a subclassed model without an Input).
            if completed_epochs(self.directory):
                log.warning("%s: model not built before fit; cannot resume, starting over", self.directory)
                shutil.rmtree(self.directory, ignore_errors=True)
        else:
            super().on_train_begin(logs)  # may fall back to the previous epoch's backup
        epochs = completed_epochs(self.directory)
        self._logs = {e: v for e, v in self._read_logs().items() if e < epochs}
        self.resumed_from = epochs if self._logs else 0
        if epochs and not self._logs:
            log.warning("%s: epoch logs missing; scoring the resumed trial on new epochs", self.directory)
        self.resumed_history.restored = dict(self._logs)
        if self.resumed_from:
            log.info("resuming from epoch %d (backup %s)", self.resumed_from, self.directory)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Logs first: after a kill between the two writes, history.json may be one epoch ahead
        # of the weights (and is cut back on resume), never behind.
        self._logs = {e: v for e, v in self._logs.items() if e < epoch}
        self._logs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
        self.directory.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(
            self.directory / HISTORY, {str(e): v for e, v in self._logs.items()}, compact=True
        )
        super().on_epoch_end(epoch, logs)

    def _read_logs(self) -> dict[int, dict[str, float]]:
        try:
            return {int(e): v for e, v in json.loads((self.directory / HISTORY).read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}


def fit_callbacks(trial_dir: str | Path, execution: int) -> list[keras.callbacks.Callback]:
    """The callbacks that back up and resume one execution of a trial."""
    history = ResumedHistory()
    return [TrialBackup(backup_dir(trial_dir, execution), history), history]


def remove(trial_dir: str | Path) -> None:
    """Delete a trial's backups (it has ended on this worker)."""
    shutil.rmtree(Path(trial_dir) / BACKUP_DIR, ignore_errors=True)


def remove_ended(project_dir: str | Path, running: set[str]) -> list[str]:
    """Delete the backups of every trial not in ``running``; returns their trial ids."""
    removed = []
    for path in files.StudyDir(Path(project_dir)).backups():
        trial_id = files.trial_id_of(path.parent)
        if trial_id not in running:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(trial_id)
    return removed
