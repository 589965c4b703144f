"""The chief's service-level record of a search: who runs what, since when, how it ended.

keras-tuner's Oracle knows trials and hyperparameters; it does not know which worker ran a trial,
when it started, or which workers are alive. The ledger keeps those facts, publishes each change
as an :class:`Event` to listeners (metrics, the status stream), and is persisted atomically as
``service_state.json`` beside ``oracle.json`` so the local runner and ``results`` can read it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tuner_service.study.files import STATE, read_json, write_json_atomic

log = logging.getLogger(__name__)


class CorruptStateError(Exception):
    """A saved state file exists but cannot be read back."""


@dataclass
class TrialRecord:
    trial_id: str
    tuner_id: str
    status: str = "RUNNING"
    score: float | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    epochs: int = 0
    attempts: int = 1  # times the trial was handed to a worker (retries and reassignments)
    message: str | None = None
    reassigned: int = 0  # times its lease ran out and it went back to the queue
    resumed_from: int | None = None  # first epoch trained in the latest attempt, if not 0
    released: int = 0  # times its worker was stopped (SIGTERM) and handed it back to the queue

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass
class WorkerRecord:
    tuner_id: str
    # waiting | training | done | silent (its trial was reassigned) | stopped (the chief stopped)
    state: str = "waiting"
    trial_id: str | None = None
    last_seen: float = field(default_factory=time.time)
    trials_completed: int = 0


@dataclass(frozen=True)
class Event:
    # trial_started | trial_reported | trial_ended | worker_seen | search_state, and
    # trial_reassigned (a silent worker's trial goes back to the queue; data: {"reason": ...,
    # "silent_for": seconds}; or {"reason": "released"}: a stopping worker handed it back) |
    # trial_reattached (a queued trial went back to its late worker).
    kind: str
    time: float
    tuner_id: str | None = None
    trial_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """``save_interval`` > 0 writes the file from a background thread at most that often (a
    burst of events becomes one write); 0 writes on every change. State changes
    (:meth:`set_state`) and :meth:`flush` always write at once.
    """

    def __init__(
        self,
        name: str,
        max_trials: int | None,
        path: Path | None = None,
        *,
        save_interval: float = 0.0,
        guard: Callable[[], None] | None = None,
        on_write: Callable[[BaseException | None], None] | None = None,
    ):
        """``guard`` is called before every write and may raise to prevent it (the study lock's
        fencing check); ``on_write`` hears how every background write went (None: written)."""
        self.name = name
        self.guard = guard
        self.on_write = on_write
        self.save_interval = save_interval
        self.max_trials = max_trials
        self.path = path
        self.state = "running"
        self.message: str | None = None
        self.trials: dict[str, TrialRecord] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.best_score: float | None = None
        self.best_trial_id: str | None = None
        self._lock = threading.RLock()
        self._listeners: list[Callable[[Event], None]] = []
        self._dirty = threading.Event()
        self._write_lock = threading.Lock()
        self._saver: threading.Thread | None = None
        self._closed = threading.Event()
        self._first_report: set[str] = set()  # trials handed out again, not yet reported on

    # -- listeners -----------------------------------------------------------------------
    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    # -- updates (called by the servicer) ------------------------------------------------
    def _worker(self, tuner_id: str) -> WorkerRecord:
        worker = self.workers.get(tuner_id)
        if worker is None:
            worker = self.workers[tuner_id] = WorkerRecord(tuner_id)
        worker.last_seen = time.time()
        return worker

    def worker_seen(self, tuner_id: str, state: str | None = None) -> None:
        with self._lock:
            worker = self._worker(tuner_id)
            if state:
                worker.state = state
                if state != "training":
                    worker.trial_id = None
        self._emit(Event("worker_seen", time.time(), tuner_id, data={"state": state}))

    def trial_started(self, tuner_id: str, trial_id: str) -> None:
        with self._lock:
            record = self.trials.get(trial_id)
            if record is None:
                record = self.trials[trial_id] = TrialRecord(trial_id, tuner_id)
            else:  # a retry, or a trial handed to another worker
                record.tuner_id, record.status, record.ended_at = tuner_id, "RUNNING", None
                record.attempts += 1
                self._first_report.add(trial_id)
            worker = self._worker(tuner_id)
            worker.state, worker.trial_id = "training", trial_id
        self._emit(Event("trial_started", time.time(), tuner_id, trial_id))
        self.save()

    def trial_reported(self, trial_id: str, step: int, metrics: dict[str, float]) -> None:
        with self._lock:
            record = self.trials.get(trial_id)
            tuner_id = record.tuner_id if record else None
            if record is not None:
                record.epochs = max(record.epochs, step + 1)
                if trial_id in self._first_report:
                    # The first epoch of a new attempt: > 0 when it resumed from a backup.
                    self._first_report.discard(trial_id)
                    record.resumed_from = step or None
            if tuner_id:
                self._worker(tuner_id)
        self._emit(
            Event(
                "trial_reported",
                time.time(),
                tuner_id,
                trial_id,
                {"step": step, "metrics": dict(metrics)},
            )
        )
        self.save()  # the epoch count on disk too (coalesced with other writes: save_interval)

    def trial_ended(
        self,
        trial_id: str,
        status: str,
        score: float | None,
        better: Callable[[float, float], bool],
        message: str | None = None,
    ) -> None:
        with self._lock:
            record = self.trials.get(trial_id) or self.trials.setdefault(
                trial_id, TrialRecord(trial_id, "unknown")
            )
            record.status, record.score, record.message = status, score, message
            record.ended_at = time.time()
            worker = self._worker(record.tuner_id)
            worker.state, worker.trial_id = "waiting", None
            if status == "COMPLETED":
                worker.trials_completed += 1
                if score is not None and (self.best_score is None or better(score, self.best_score)):
                    self.best_score, self.best_trial_id = score, trial_id
            tuner_id = record.tuner_id
        self._emit(
            Event(
                "trial_ended",
                time.time(),
                tuner_id,
                trial_id,
                {"status": status, "score": score, "duration": record.duration},
            )
        )
        self.save()

    def trial_reassigned(self, trial_id: str, from_tuner_id: str, silent_for: float) -> None:
        """The holder's lease ran out: the trial waits in the queue for the next worker."""
        with self._lock:
            record = self.trials.get(trial_id) or self.trials.setdefault(
                trial_id, TrialRecord(trial_id, from_tuner_id)
            )
            record.status = "QUEUED"
            record.reassigned += 1
            worker = self.workers.get(from_tuner_id)
            if worker is not None and worker.trial_id == trial_id:
                worker.state, worker.trial_id = "silent", None
        self._emit(
            Event(
                "trial_reassigned",
                time.time(),
                from_tuner_id,
                trial_id,
                {"reason": "lease expired", "silent_for": silent_for},
            )
        )
        self.save()

    def trial_released(self, trial_id: str, tuner_id: str) -> None:
        """A stopping worker (SIGTERM) handed the trial back: it waits in the queue for the next.

        Emitted as a ``trial_reassigned`` event (reason ``released``): the trial moves, as after a
        lost lease, only sooner. The worker is leaving: ``done``, not missing.
        """
        with self._lock:
            record = self.trials.get(trial_id) or self.trials.setdefault(
                trial_id, TrialRecord(trial_id, tuner_id)
            )
            record.status = "QUEUED"
            record.released += 1
            worker = self._worker(tuner_id)
            worker.state, worker.trial_id = "done", None
        self._emit(Event("trial_reassigned", time.time(), tuner_id, trial_id, {"reason": "released"}))
        self.save()

    def trial_reattached(self, trial_id: str, tuner_id: str) -> None:
        """A queued trial went back to the worker that still trains it (same attempt)."""
        with self._lock:
            record = self.trials.get(trial_id) or self.trials.setdefault(
                trial_id, TrialRecord(trial_id, tuner_id)
            )
            record.tuner_id, record.status = tuner_id, "RUNNING"
            worker = self._worker(tuner_id)
            worker.state, worker.trial_id = "training", trial_id
        self._emit(Event("trial_reattached", time.time(), tuner_id, trial_id))
        self.save()

    def workers_stopped(self) -> list[str]:
        """The chief stops: workers it still counted as training or waiting are not served any
        more (``status`` after Ctrl-C must not show them training). Returns their ids."""
        with self._lock:
            stopped = [w.tuner_id for w in self.workers.values() if w.state in ("training", "waiting")]
            for tuner_id in stopped:
                self.workers[tuner_id].state, self.workers[tuner_id].trial_id = "stopped", None
        for tuner_id in stopped:
            self._emit(Event("worker_seen", time.time(), tuner_id, data={"state": "stopped"}))
        return stopped

    def set_state(self, state: str, message: str | None = None) -> None:
        with self._lock:
            self.state, self.message = state, message
        self._emit(Event("search_state", time.time(), data={"state": state, "message": message}))
        self.flush()

    # -- views ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for record in self.trials.values():
                out[record.status] = out.get(record.status, 0) + 1
            return out

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "state": self.state,
                "message": self.message,
                "max_trials": self.max_trials,
                "best_score": self.best_score,
                "best_trial_id": self.best_trial_id,
                "counts": self.counts(),
                "updated_at": time.time(),
                # vars() rather than asdict(): the records hold only scalars, and asdict's
                # recursive deep copy made a snapshot of 1,000 trials take ~50 ms.
                "trials": {k: {**vars(v), "duration": v.duration} for k, v in self.trials.items()},
                "workers": {k: dict(vars(v)) for k, v in self.workers.items()},
            }

    def save(self) -> None:
        """Persist the snapshot: now, or soon with ``save_interval`` (the chief's hot path)."""
        if self.path is None:
            return
        if self.save_interval <= 0 or self._closed.is_set():
            self.flush()
            return
        self._dirty.set()
        if self._saver is None:
            with self._write_lock:
                if self._saver is None:
                    self._saver = threading.Thread(target=self._save_loop, name="ledger-saver", daemon=True)
                    self._saver.start()

    def flush(self) -> None:
        """Write the snapshot now (atomically); later events mark it dirty again."""
        if self.path is None:
            return
        with self._write_lock:
            if self.guard is not None:
                self.guard()
            self._dirty.clear()
            # Compact: at hundreds of trials the indented encoder's GIL time showed in the
            # tail latency of the RPCs served meanwhile (bench.load, docs/performance.md).
            write_json_atomic(self.path, self.snapshot(), compact=True)

    def close(self, *, write: bool = True) -> None:
        """Stop the background saver and write the last snapshot (unless ``write`` is False:
        a chief that lost the study to another must not).

        The chief calls it when it shuts down, so no delayed write lands after the process
        (or a benchmark's temporary storage) is gone; later changes are written at once.
        """
        self._closed.set()
        self._dirty.set()  # wake a saver that waits for changes
        if self._saver is not None:
            self._saver.join(timeout=10)
        if write:
            self.flush()

    def _save_loop(self) -> None:
        failing = ""  # the last write error, logged once
        while True:
            self._dirty.wait()
            # Let the rest of a burst land in the same write; close() ends the wait early.
            if self._closed.wait(self.save_interval):
                return
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - a full disk, or fenced: say so, keep serving
                if str(err) != failing:
                    log.error("cannot write %s (retrying every second): %s", self.path, err)
                failing = str(err)
                self._dirty.set()  # try again
                if self.on_write is not None:
                    self.on_write(err)
                if self._closed.wait(1.0):
                    return
                continue
            failing = ""
            if self.on_write is not None:
                self.on_write(None)

    def restore(self) -> None:
        """Reload a previous chief's ledger (same storage), so a restarted chief keeps history."""
        if self.path is None or not self.path.exists():
            return
        data = read_json(self.path)
        if not isinstance(data, dict):
            raise CorruptStateError(f"{self.path}: not a readable service state (corrupt JSON?)")
        with self._lock:
            for tid, rec in data.get("trials", {}).items():
                rec.pop("duration", None)
                self.trials[tid] = TrialRecord(**rec)
            # Workers too: a search extended (more max_trials) or resumed keeps who ran what;
            # a worker that comes back updates its own record.
            known = {f.name for f in fields(WorkerRecord)}
            for tuner_id, rec in data.get("workers", {}).items():
                self.workers[tuner_id] = WorkerRecord(**{k: v for k, v in rec.items() if k in known})
            self.best_score = data.get("best_score")
            self.best_trial_id = data.get("best_trial_id")


def read_snapshot(project_dir: Path) -> dict[str, Any] | None:
    """The last saved ledger of the study in ``project_dir``, or None."""
    data = read_json(Path(project_dir) / STATE)
    return data if isinstance(data, dict) else None
