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

A write that fails (a full or read-only volume) is retried, and :class:`WriteHealth` tells the
chief once the state could not be written for ``deadline`` seconds: the chief then stops with
that message rather than serving a search whose results it cannot keep.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import keras_tuner

from tuner_service import compat
from tuner_service.study.files import write_text_atomic

log = logging.getLogger(__name__)


# Seconds of failed writes after which the chief gives up (a volume that fills up or turns
# read-only rarely comes back by itself; the saved state stays consistent for a restart).
WRITE_DEADLINE = 60.0


class WriteHealth:
    """Tracks the chief's state writes; calls ``on_stuck(message)`` once they failed ``deadline`` s."""

    def __init__(
        self,
        on_stuck: Callable[[str], None],
        *,
        deadline: float = WRITE_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.on_stuck = on_stuck
        self.deadline = deadline
        self.clock = clock
        self._failing_since: float | None = None
        self._told = False
        self._lock = threading.Lock()

    def report(self, what: str, err: BaseException | None) -> None:
        with self._lock:
            if err is None:
                self._failing_since = None
                return
            now = self.clock()
            since = self._failing_since = self._failing_since or now
            if now - since < self.deadline or self._told:
                return
            self._told = True
        self.on_stuck(f"cannot write the study's state ({what}) for {now - since:.0f}s: {err}")


class WriteBehind:
    """Take over ``oracle``'s writes; ``lock`` is the lock every oracle call holds.

    ``guard`` is called before every write and may raise to prevent it (the study lock's fencing
    check); ``health`` hears how every background write went.
    """

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        lock: threading.RLock,
        *,
        interval: float = 0.1,
        guard: Callable[[], None] | None = None,
        health: WriteHealth | None = None,
    ):
        self.oracle = oracle
        self.lock = lock
        self.interval = interval
        self.guard = guard
        self.health = health
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
            try:
                if self.guard is not None:
                    self.guard()
                while trials:
                    trial_id, text = trials[0]
                    write_text_atomic(compat.trial_file(self.oracle, trial_id), text)
                    trials.pop(0)
                if oracle_state is not None:
                    write_text_atomic(compat.oracle_file(self.oracle), oracle_state)
            except BaseException:
                with self.lock:  # not written: dirty again, unless changed (and marked) meanwhile
                    for trial_id, _ in trials:
                        self._dirty_trials.setdefault(trial_id, self.oracle.trials[trial_id])
                    self._oracle_dirty = self._oracle_dirty or oracle_state is not None
                raise

    def _loop(self) -> None:
        failing = ""  # the last write error, logged once
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - e.g. a full disk: keep serving, say so, retry
                if str(err) != failing:
                    log.error("cannot write the oracle's state (retrying every second): %s", err)
                failing = str(err)
                if self.health is not None:
                    self.health.report("oracle.json, trial.json", err)
                self._wake.set()
                if self._stop.wait(1.0):
                    return
                continue
            failing = ""
            if self.health is not None:
                self.health.report("oracle.json, trial.json", None)
            if self._stop.wait(self.interval):  # let the next burst of changes coalesce
                return

    def close(self, *, write: bool = True) -> None:
        """Stop the writer, write everything (unless ``write`` is False: a fenced chief must not),
        give the oracle its own writes back."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            if write:
                self.flush()
        finally:
            compat.redirect_oracle_writes(self.oracle, None, None)
