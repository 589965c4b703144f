"""A full or read-only volume during the search: the chief says so and ends, it does not hang.

A real keras-tuner oracle and a real Chief (gRPC server on loopback); the disk error is injected
into the oracle writer's atomic write.
"""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import pytest

from tests.fault.test_leases import _oracle
from tuner_service.chief import persistence
from tuner_service.chief.chief import Chief
from tuner_service.chief.persistence import WriteBehind, WriteHealth
from tuner_service.spec import StudySpec
from tuner_service.study import files


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_health_calls_once_after_the_deadline_and_resets_on_success():
    now = [0.0]
    told: list[str] = []
    health = WriteHealth(told.append, deadline=10, clock=lambda: now[0])
    health.report("oracle.json", OSError("full"))
    now[0] = 5
    health.report("oracle.json", None)  # it came back: the clock starts again
    now[0] = 12
    health.report("oracle.json", OSError("full"))
    assert told == []
    now[0] = 22
    health.report("oracle.json", OSError("full"))
    health.report("oracle.json", OSError("full"))
    assert told == ["cannot write the study's state (oracle.json) for 10s: full"]


def test_failed_writes_keep_their_trials_dirty_until_the_disk_comes_back(tmp_path: Path, monkeypatch):
    oracle = _oracle(tmp_path)
    lock = threading.RLock()
    writer = WriteBehind(oracle, lock, interval=0.01)
    try:
        monkeypatch.setattr(persistence, "write_text_atomic", _disk_full)
        with lock:
            trial = oracle.create_trial("w0")
        with pytest.raises(OSError):
            writer.flush()
        monkeypatch.undo()
        writer.flush()
        saved = json.loads((tmp_path / "p" / f"trial_{trial.trial_id}" / files.TRIAL).read_text())
        assert saved["trial_id"] == trial.trial_id and saved["status"] == "RUNNING"
    finally:
        writer.close()


def test_chief_that_cannot_write_its_state_stops_with_a_message(tmp_path: Path, monkeypatch):
    oracle = _oracle(tmp_path)
    spec = StudySpec(name="p", model="mlp", directory=str(tmp_path), max_trials=3, worker_deadline=0)
    chief = Chief(spec, oracle, address="127.0.0.1:0", write_deadline=1.0)
    monkeypatch.setattr(persistence, "write_text_atomic", _disk_full)
    chief.start()
    with chief.servicer.lock:
        oracle.create_trial("w0")  # a change the writer cannot save
    started = time.monotonic()
    outcome = chief.wait()
    waited = time.monotonic() - started
    chief.shutdown(outcome)  # tries once more, logs, does not raise
    assert outcome.state == "unwritable"
    assert "cannot write the study's state (oracle.json, trial.json) for " in outcome.message
    assert "No space left on device" in outcome.message
    assert 1.0 <= waited < 10, waited
    saved = json.loads((tmp_path / "p" / files.STATE).read_text())  # the ledger's own file still works
    assert saved["state"] == "interrupted" and "No space left" in saved["message"]
    print(f"\ndisk full: the chief stopped {waited:.1f}s after its first failed write (write deadline 1s)")
