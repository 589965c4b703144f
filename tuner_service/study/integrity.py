"""Before a chief touches a study directory: can it be written, and can its saved state be read?

A study directory that is a file or is not writable, and a saved state that cannot be read back
(a truncated or binary ``oracle.json``, a deleted ``trial.json`` of a running trial), would
otherwise surface as a traceback from deep inside keras-tuner. Each becomes one
:class:`StudyStateError` naming the file and how to recover (exit 2: a restart cannot fix it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tuner_service.process import UsageError
from tuner_service.study import files

START_OVER = "or move {root} away to start the study over"


class StudyStateError(UsageError):
    """The study directory, or a state file in it, cannot be used."""


def check_directory(root: Path) -> None:
    """``root`` (the study's folder) exists or can be made, is a folder, and can be written."""
    for path in (root, *root.parents):
        if path.exists() and not path.is_dir():
            raise StudyStateError(
                f"study directory {root}: {path} is a file, not a folder; choose another `directory`"
            )
        if path.exists():
            break
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise StudyStateError(
            f"study directory {root} is not writable ({err.strerror or err}); "
            "fix its permissions or mount, or choose another `directory`"
        ) from None


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise StudyStateError(f"{path} is corrupt ({type(err).__name__}: {err})") from None


def check_saved_state(root: Path, tuner_id: str) -> None:
    """Read back what keras-tuner and the ledger will reload; raise on the first unusable file."""
    study = files.StudyDir(root)
    recover = START_OVER.format(root=root)
    try:
        for path in study.trial_files():
            trial = _read(path)
            if not isinstance(trial, dict) or "trial_id" not in trial:
                raise StudyStateError(f"{path} is not a keras-tuner trial")
        oracle = _read(study.oracle) if study.oracle.exists() else None
        if oracle is not None and not isinstance(oracle, dict):
            raise StudyStateError(f"{study.oracle} is not a keras-tuner oracle state")
        tuner_file = root / f"{tuner_id}.json"  # keras-tuner's Tuner state, named after the tuner id
        if tuner_file.exists():
            _read(tuner_file)
        elif oracle is not None:
            # keras-tuner reloads a search only when it finds this file; without it, it would start
            # a new search over the old one, overwriting oracle.json and trial_0, trial_1...
            others = sorted(p.name for p in root.glob("chief*.json"))
            raise StudyStateError(
                f"{study.oracle} holds a search but {tuner_file.name} (this chief's tuner id) is missing"
                + (
                    f"; found {', '.join(others)}: start the chief with that KERASTUNER_TUNER_ID"
                    if others
                    else ""
                )
            )
        if study.state.exists():
            _read(study.state)
    except StudyStateError as err:
        raise StudyStateError(f"{err}: restore it from a backup, {recover}") from None
    # Every trial the oracle handed out must be there: keras-tuner numbers new trials by count,
    # so a missing one would make the next new trial reuse (overwrite) an existing id.
    started = (oracle or {}).get("start_order", [])
    for trial_id in started if isinstance(started, list) else ():
        if not study.trial_file(str(trial_id)).exists():
            raise StudyStateError(
                f"{study.trial_file(str(trial_id))} is missing, but {study.oracle} lists trial {trial_id}: "
                f"restore the file from a backup, {recover}"
            )
