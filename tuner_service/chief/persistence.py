"""Write-behind persistence for the chief's oracle: its files, written off the request path.

keras-tuner's Oracle rewrites ``oracle.json`` and a ``trial.json`` inside every
create/update/end call, under its lock: five file writes per trial, each 2-4 ms on a busy node's
disk, so a burst of workers queues behind the disk, not behind any decision. Here each call
only *marks* what changed; a background thread serialises the dirty state under the servicer's
lock (microseconds) and writes it outside the lock, atomically (write, then rename: a killed
chief never leaves a half-written file, which keras-tuner's in-place writes can). Repeated
changes within ``interval`` become one write.

Durability: a chief killed with SIGKILL loses at most ``interval`` of changes; on restart
keras-tuner sends trials it believed running back for a retry. A clean stop (end of search,
SIGTERM) calls :meth:`WriteBehind.close`, which writes everything before the chief exits.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import keras_tuner

from tuner_service import compat
from tuner_service.study.files import write_text_atomic

log = logging.getLogger(__name__)


class WriteBehind:
    """Take over ``oracle``'s writes; ``lock`` is the lock every oracle call holds."""

    def __init__(self, oracle: keras_tuner.Oracle, lock: threading.RLock, *, interval: float = 0.1):
        self.oracle = oracle
        self.lock = lock
        self.interval = interval
        self._oracle_dirty = False
        self._dirty_trials: dict[str, Any] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()  # one flush at a time keeps writes in order
        compat.redirect_oracle_writes(oracle, self._mark_oracle, self._mark_trial)
        self._thread = threading.Thread(target=self._loop, name="oracle-writer", daemon=True)
        self._thread.start()

    # -- what the oracle calls instead of writing -------------------------------------------
    def _mark_oracle(self) -> None:
        self._oracle_dirty = True
        self._wake.set()

    def _mark_trial(self, trial: Any) -> None:
        self._dirty_trials[trial.trial_id] = trial
        self._wake.set()

    # -- writing ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write whatever changed, now. Safe from any thread."""
        with self._flush_lock:
            with self.lock:  # no oracle call runs while the state is serialised
                trials = [(tid, json.dumps(t.get_state())) for tid, t in self._dirty_trials.items()]
                self._dirty_trials.clear()
                oracle_state = json.dumps(self.oracle.get_state()) if self._oracle_dirty else None
                self._oracle_dirty = False
            for trial_id, text in trials:
                write_text_atomic(compat.trial_file(self.oracle, trial_id), text)
            if oracle_state is not None:
                write_text_atomic(compat.oracle_file(self.oracle), oracle_state)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - e.g. a full disk: keep serving, say so, retry
                log.error("cannot write the oracle's state: %s", err)
                self._oracle_dirty = True
            if self._stop.wait(self.interval):  # let the next burst of changes coalesce
                return

    def close(self) -> None:
        """Stop the writer, write everything, give the oracle its own writes back."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        compat.redirect_oracle_writes(self.oracle, None, None)
