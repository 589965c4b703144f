"""The chief's ledger on disk: delayed writes on the hot path, nothing left pending at shutdown."""

from __future__ import annotations

import json
from pathlib import Path

from tuner_service.study.files import STATE as STATE_FILE
from tuner_service.study.ledger import Ledger


def _saved(path: Path) -> dict:
    return json.loads(path.read_text())


def test_close_writes_pending_changes_at_once_and_stops_the_background_saver(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    ledger = Ledger("s", 3, path, save_interval=30.0)  # a delay no test would wait out
    ledger.trial_started("worker-0", "00")
    assert not path.exists()  # the write is delayed to batch a burst of events
    ledger.close()
    assert _saved(path)["trials"]["00"]["status"] == "RUNNING"
    assert ledger._saver is not None and not ledger._saver.is_alive()
    # After close nothing is delayed any more: a late change is on disk when the call returns.
    ledger.trial_started("worker-1", "01")
    assert "01" in _saved(path)["trials"]


def test_each_epoch_report_reaches_the_saved_state(tmp_path: Path) -> None:
    """``service_state.json`` shows a running trial's progress, not only its start: what
    ``tuner-service status`` reads after the chief is gone, and how a test or an operator sees
    which epoch a worker had reached when it died."""
    path = tmp_path / STATE_FILE
    ledger = Ledger("s", 3, path, save_interval=0.0)
    ledger.trial_started("worker-0", "00")
    ledger.trial_reported("00", 1, {"val_accuracy": 0.5})
    assert _saved(path)["trials"]["00"]["epochs"] == 2
