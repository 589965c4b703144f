"""Graceful hand-over: a worker told to stop (SIGTERM) gives its trial back to the chief.

Kubernetes stops a pod with SIGTERM and, a grace period later (30 s by default; a spot VM's
notice is about as long), SIGKILL. The worker runs as the container's main process, where an
unhandled SIGTERM is ignored: without a handler the pod waits for SIGKILL and its trial waits
``lease_timeout`` (default 300 s) before another worker resumes it. With :class:`Handover`:

1. SIGTERM only marks the request: a handler that raised in the middle of an RPC could leave the
   chief handing this worker a trial it never hears of. Before the search starts (imports, data
   loading) nothing is held, and the handler stops the worker at once.
2. The worker stops at the next safe point (:class:`StopPoint`, placed after the epoch backup):
   at the end of the current epoch, after its backup is written, when that end comes within
   ``finish_within`` seconds of the signal (judged from the previous epoch's duration);
   otherwise at the next batch, relying on the previous epoch's backup. Between trials and while
   waiting for one, it stops before asking for the next.
3. It raises :class:`HandedOver`, which ends keras-tuner's search without ending the trial (its
   backup stays); the worker then tells the chief the trial is released (``wire.RELEASE``), the
   chief queues it at once, and the next worker that asks resumes it from its last completed
   epoch. The process exits 0 (docs/fault-tolerance.md).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

import keras
import keras_tuner

DEFAULT_FINISH_WITHIN = 20.0  # seconds: inside Kubernetes' default 30 s grace, with room to exit


class HandedOver(keras_tuner.errors.FatalError):
    """The worker was told to stop; ``trial_id`` is the trial it holds (None: none)."""

    def __init__(self, trial_id: str | None, where: str):
        self.trial_id = trial_id
        self.where = where
        self.handed_back = False  # set once the chief has queued the trial
        super().__init__(f"stopped by SIGTERM {where}")


class Handover:
    """The stop request and the rules for where to honour it."""

    def __init__(
        self, finish_within: float = DEFAULT_FINISH_WITHIN, clock: Callable[[], float] = time.monotonic
    ):
        self.finish_within = finish_within
        self.clock = clock
        self.requested_at: float | None = None
        self.searching = False  # from then on the handler only marks the request

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def install(self) -> None:
        """Handle SIGTERM in this (the main) thread."""
        signal.signal(signal.SIGTERM, self._on_signal)

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = self.clock()
        if not self.searching:
            raise HandedOver(None, "before the search started")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request()  # no logging here: the main thread may be inside a write to the same stream

    def check(self, trial_id: str | None, where: str) -> None:
        """A safe point: raise HandedOver if a stop was requested."""
        if self.requested:
            raise HandedOver(trial_id, where)

    def must_stop_mid_epoch(self, epoch_started: float, last_epoch: float | None) -> bool:
        """Stop now rather than finish the epoch: it would end too late (or already has)."""
        if self.requested_at is None:
            return False
        deadline = self.requested_at + self.finish_within
        expected_end = None if last_epoch is None else epoch_started + last_epoch
        return self.clock() >= deadline or (expected_end is not None and expected_end > deadline)

    def stop_point(self, trial_id: str) -> StopPoint:
        return StopPoint(self, trial_id)


class StopPoint(keras.callbacks.Callback):
    """Where a trial's training may stop for a hand-over. Runs after the epoch backup's callback
    (``tuners.ServiceTuner.fit_callbacks``), so "after epoch N" means epoch N is backed up."""

    def __init__(self, handover: Handover, trial_id: str):
        super().__init__()
        self.handover = handover
        self.trial_id = trial_id
        self.epoch = 0
        self.epoch_started = handover.clock()
        self.last_epoch: float | None = None  # seconds the previous epoch took, in this fit

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.handover.check(self.trial_id, "before training")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.handover.check(self.trial_id, f"before epoch {epoch + 1}")
        self.epoch, self.epoch_started = epoch, self.handover.clock()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.handover.must_stop_mid_epoch(self.epoch_started, self.last_epoch):
            raise HandedOver(
                self.trial_id,
                f"in epoch {self.epoch + 1}, which would not end within "
                f"{self.handover.finish_within:g}s of the signal (the last backup is the resume point)",
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.last_epoch = self.handover.clock() - self.epoch_started
        self.handover.check(self.trial_id, f"after epoch {epoch + 1} (backed up)")
