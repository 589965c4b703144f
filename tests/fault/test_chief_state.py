"""What a chief decides from the state it finds at start-up, against a real keras-tuner oracle."""

from __future__ import annotations

import json
from pathlib import Path

from keras_tuner.engine.trial import TrialStatus

from tests.fault.test_leases import _oracle
from tuner_service.chief.chief import Chief, Outcome
from tuner_service.spec import StudySpec
from tuner_service.study import files


def _chief(tmp_path: Path, max_trials: int) -> Chief:
    oracle = _oracle(tmp_path, max_trials=max_trials)
    spec = StudySpec(name="p", model="mlp", directory=str(tmp_path), max_trials=max_trials)
    return Chief(spec, oracle, address="127.0.0.1:0")


def _run_one_trial(chief: Chief) -> None:
    trial = chief.oracle.create_trial("w0")
    chief.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    trial.status = TrialStatus.COMPLETED
    chief.oracle.end_trial(trial)


def test_a_search_is_over_when_its_budget_ended_or_it_was_saved_finished_with_the_same_budget(tmp_path):
    chief = _chief(tmp_path, max_trials=1)
    assert not chief.search_over()
    _run_one_trial(chief)
    assert chief.search_over()  # every trial of the budget ended, none running or queued
    chief.shutdown(Outcome("finished"))
    saved = json.loads((tmp_path / "p" / files.STATE).read_text())
    assert saved["state"] == "finished" and saved["max_trials"] == 1

    # The same study with a larger budget (extended on purpose): not over, it is served again.
    assert not _chief(tmp_path, max_trials=3).search_over()


def test_shutdown_marks_training_and_waiting_workers_stopped(tmp_path):
    chief = _chief(tmp_path, max_trials=3)
    chief.ledger.trial_started("w0", "0")
    chief.ledger.worker_seen("w1", "waiting")
    chief.ledger.worker_seen("w2", "done")
    chief.shutdown(Outcome("interrupted", "stopped by SIGINT"))
    workers = json.loads((tmp_path / "p" / files.STATE).read_text())["workers"]
    assert {t: w["state"] for t, w in workers.items()} == {"w0": "stopped", "w1": "stopped", "w2": "done"}
    assert workers["w0"]["trial_id"] is None


def test_a_study_directory_that_cannot_be_written_is_refused_with_one_line(tmp_path, monkeypatch):
    import errno
    import tempfile

    import pytest

    from tuner_service.study.integrity import StudyStateError, check_directory

    def read_only(*args, **kwargs):  # what a read-only mount answers (tests run as root: no chmod)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StudyStateError) as refused:
        check_directory(tmp_path / "studies" / "p")
    assert str(refused.value) == (
        f"study directory {tmp_path / 'studies' / 'p'} is not writable (Read-only file system); "
        "fix its permissions or mount, or choose another `directory`"
    )
