"""Every file of a study directory, by name, and the one way to write and read them.

A study lives in ``<directory>/<name>/`` on the shared storage (a ReadWriteMany volume on a
cluster). Who writes what:

========================  ==============================  =========================================
file                      written by                      holds
========================  ==============================  =========================================
``oracle.json``           chief (keras-tuner's Oracle)    the search space, trial ids, oracle state
``trial_<id>/trial.json`` chief (keras-tuner's Oracle)    one trial: hyperparameters, metrics, score
``trial_<id>/backup/``    the worker training the trial   ``BackupAndRestore`` state + ``history.json``
``service_state.json``    chief (:mod:`.ledger`)          who ran what, since when, how it ended
``trial_history.jsonl``   chief (:mod:`.history`)         every per-epoch report, appended
``endpoints.json``        chief (:mod:`.endpoints`)       its pid and host; where its APIs listen
``early_stopping.json``   chief (:mod:`tuner_service.stopping`)  the stopping rule's curves
``results.json``          chief after the search          best trial, retrained test metrics
``best_model.keras``      chief after the search          the retrained best model
``baseline.json``         chief / ``baseline``            the seed's untuned baseline, tested
``experiment.json|md``,   ``experiment``                  the seed's protocol, compared;
``experiment-study.yaml``                                 the resolved study it ran
``report.html|md``,       ``report``                      the human-readable report
``report_files/``
``logs/<process>.log``    ``run`` (local processes)       each process's output
``chief.lock``            chief (:mod:`.lock`)            its one chief: host, pid, heartbeat, token
``tensorboard/<trial>/``  workers if ``tensorboard``      TensorBoard logs with HParams, per trial
========================  ==============================  =========================================

Every JSON file is written with :func:`write_json_atomic` (write a temporary file, then rename):
a process killed mid-write leaves the previous version, never half a file.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORACLE = "oracle.json"
TRIAL_DIR_PREFIX = "trial_"
TRIAL = "trial.json"
STATE = "service_state.json"
HISTORY = "trial_history.jsonl"
ENDPOINTS = "endpoints.json"
EARLY_STOPPING = "early_stopping.json"
RESULTS = "results.json"
BEST_MODEL = "best_model.keras"
BASELINE = "baseline.json"
EXPERIMENT_JSON = "experiment.json"
EXPERIMENT_MD = "experiment.md"
EXPERIMENT_STUDY = "experiment-study.yaml"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_FILES = "report_files"
LOGS = "logs"
LOCK = "chief.lock"
TENSORBOARD = "tensorboard"
# Inside a trial directory (tuner_service/checkpoints.py): Keras' BackupAndRestore state.
BACKUP = "backup"
BACKUP_HISTORY = "history.json"
BACKUP_METADATA = "training_metadata.json"  # written by BackupAndRestore: {"epoch": completed epochs}


@dataclass(frozen=True)
class StudyDir:
    """The paths of one study directory (nothing is created by naming them)."""

    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def oracle(self) -> Path:
        return self.root / ORACLE

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    @property
    def endpoints(self) -> Path:
        return self.root / ENDPOINTS

    @property
    def early_stopping(self) -> Path:
        return self.root / EARLY_STOPPING

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def best_model(self) -> Path:
        return self.root / BEST_MODEL

    @property
    def baseline(self) -> Path:
        return self.root / BASELINE

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    def looks_like_study(self) -> bool:
        """Whether the folder holds a search's state (so removing it removes a study, nothing else)."""
        return self.oracle.exists() or self.state.exists() or bool(self.trial_files())

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / f"{TRIAL_DIR_PREFIX}{trial_id}"

    def trial_file(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL

    def trial_files(self) -> list[Path]:
        """Every ``trial_<id>/trial.json``, sorted by path."""
        return sorted(self.root.glob(f"{TRIAL_DIR_PREFIX}*/{TRIAL}"))

    def backups(self) -> list[Path]:
        """Every ``trial_<id>/backup`` folder."""
        return sorted(self.root.glob(f"{TRIAL_DIR_PREFIX}*/{BACKUP}"))


def trial_id_of(trial_dir: Path) -> str:
    return trial_dir.name.removeprefix(TRIAL_DIR_PREFIX)


def write_text_atomic(path: str | Path, text: str | bytes) -> None:
    """Write-then-rename, so a killed process never leaves a half-written file.

    The temporary name carries the pid and thread, so two writers never share one; on a
    failure (a full or read-only disk) the temporary file is removed and the error raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: Any, *, compact: bool = False) -> None:
    """:func:`write_text_atomic` of ``payload`` as JSON.

    ``compact`` skips indentation and key sorting: ``json`` then encodes in C, about 3 times
    faster, which matters for a large file rewritten while RPC threads wait for the GIL.
    """
    indent = None if compact else 1
    write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=not compact, default=str))


def read_json(path: str | Path) -> Any | None:
    """A JSON file written by :func:`write_json_atomic`, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
