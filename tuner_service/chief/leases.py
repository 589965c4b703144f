"""Trial leases: a running trial belongs to one worker, for as long as that worker keeps reporting.

The contract (docs/fault-tolerance.md):

* Handing a trial to a worker grants that worker (its tuner id) a lease of ``timeout`` seconds.
  Every report from the holder (the per-epoch progress report is the heartbeat) renews it.
* A lease that runs out sends the trial back to keras-tuner's queue **without** counting a
  failure; the next worker that asks gets it (and resumes from the trial's last backup). The
  ledger records ``trial_reassigned``.
* A report about a trial from a worker that is not its holder is *fenced*: :class:`StaleHolder`
  (the servicer answers ``ABORTED``; the worker abandons the trial and asks for new work) —
  except when the trial is still waiting in the queue, unclaimed: then the reporting worker
  still has its training state, and the trial is re-attached to it.
* Reports that carry no tuner id (stock keras-tuner workers) are accepted as from the holder.
* A holder that is told to stop (SIGTERM: spot preemption, a drained node) hands its trial back
  (:meth:`Leases.release_to_queue`): the trial goes back to the queue at once, as after a lost
  lease but without waiting for it, and the next worker resumes it from its last epoch backup.
* One tuner id, one process: each of our workers names its process (``wire.INSTANCE``). The
  first call from a process the chief has not seen makes it the tuner id's current process (a
  restarted pod gets its trial back); a call from an earlier process of that id is then fenced
  with :class:`Superseded` (it must stop, not ask again), so two live processes with one id (two
  pods of one Job index) never train the same trial side by side (:meth:`Leases.identify`).
* A restarted chief re-grants the trials that were running to the workers that held them, with
  a fresh lease, so a worker that kept training while the chief was away carries on.

All decisions are taken under :attr:`Leases.lock`, which the servicer also holds around the
oracle calls they guard (create/update/end trial), so a lease cannot expire half-way through a
report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuner_service import compat, wire
from tuner_service.study.ledger import Ledger

log = logging.getLogger(__name__)


class StaleHolder(Exception):
    """A report about a trial from a worker that no longer holds it."""

    metadata: tuple[tuple[str, str], ...] = ()  # sent as the ABORTED answer's trailing metadata


class Superseded(StaleHolder):
    """A call from a process whose tuner id a newer process has taken over: it must stop."""

    metadata = ((wire.FENCE, wire.SUPERSEDED),)


@dataclass
class Lease:
    trial_id: str
    tuner_id: str
    renewed: float  # clock() of the last report
    expires: float


class Leases:
    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        ledger: Ledger,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.oracle = oracle
        self.ledger = ledger
        self.timeout = timeout
        self.clock = clock
        self.lock = threading.RLock()
        self._leases: dict[str, Lease] = {}  # by trial id
        self._instances: dict[str, list[str]] = {}  # tuner id -> its processes, in order of first call

    # -- queries -------------------------------------------------------------------------
    def next_expiry(self) -> float | None:
        """Seconds until the next lease runs out (None when no trial is running)."""
        with self.lock:
            if not self._leases:
                return None
            return max(0.0, min(lease.expires for lease in self._leases.values()) - self.clock())

    # -- the servicer's calls --------------------------------------------------------------
    def grant(self, trial_id: str, tuner_id: str) -> None:
        """``tuner_id`` was handed ``trial_id`` (new, from the queue, or asked again)."""
        with self.lock:
            now = self.clock()
            self._leases[trial_id] = Lease(trial_id, tuner_id, now, now + self.timeout)

    def admit(self, trial_id: str, tuner_id: str | None) -> None:
        """A report about ``trial_id`` from ``tuner_id``: renew, re-attach, or raise StaleHolder."""
        with self.lock:
            lease = self._leases.get(trial_id)
            if lease is not None and tuner_id in (None, lease.tuner_id):
                lease.renewed = self.clock()
                lease.expires = lease.renewed + self.timeout
                return
            if lease is None and tuner_id is None:
                return  # a stock worker's report on a trial we hold no lease for: as stock does
            if lease is None and tuner_id is not None and self._reattach(trial_id, tuner_id):
                return
            holder = lease.tuner_id if lease else None
            raise StaleHolder(
                f"trial {trial_id} is no longer held by {tuner_id}"
                + (f"; it was reassigned to {holder}" if holder else "")
                + f" after {tuner_id} was silent for more than {self.timeout:g}s"
            )

    def identify(self, tuner_id: str | None, instance: str | None) -> None:
        """A call from process ``instance`` of ``tuner_id``: raise Superseded if a newer one took over.

        keras-tuner hands a tuner id the trial it already holds, so two processes with one id
        would train one trial side by side and write one backup. The newest process wins, as
        Kubernetes wants (a replacement pod supersedes the pod it replaces): the first call from an
        unseen process makes it current. After a chief restart the first process to call is current.
        Calls without a tuner id or instance (stock workers) are not checked.
        """
        if not tuner_id or not instance:
            return
        with self.lock:
            seen = self._instances.setdefault(tuner_id, [])
            if instance not in seen:
                if seen:
                    log.warning("%s: a new process (%s) took over from %s", tuner_id, instance, seen[-1])
                seen.append(instance)
                return
            if instance != seen[-1]:
                raise Superseded(
                    f"{tuner_id}: another process with this tuner id ({seen[-1]}) took over from this one "
                    f"({instance}); two workers must not share a tuner id"
                )

    def release_to_queue(self, trial_id: str, tuner_id: str) -> bool:
        """The holder is stopping (SIGTERM) and hands the trial back: queue it for the next worker now.

        What :meth:`reap` does for a lost lease, at once and at the holder's request: no failure is
        counted and no retry spent (keras-tuner counts runs only in ``end_trial``); the next worker
        that asks resumes the trial from its last epoch backup. Raises StaleHolder when
        ``tuner_id`` does not hold it; returns False when it was already queued (its lease had run out).
        """
        with self.lock:
            lease = self._leases.get(trial_id)
            if lease is None and trial_id in compat.retry_queue(self.oracle):
                return False
            if lease is None or lease.tuner_id != tuner_id:
                holder = f"; it is held by {lease.tuner_id}" if lease else ""
                raise StaleHolder(f"trial {trial_id} is not held by {tuner_id}{holder}")
            del self._leases[trial_id]
            compat.hand_back(self.oracle, trial_id, tuner_id)
            log.info("trial %s: %s is stopping and handed it back; back to the queue", trial_id, tuner_id)
            self.ledger.trial_released(trial_id, tuner_id)
            return True

    def release(self, trial_id: str) -> None:
        """The trial ended (completed, failed, or sent for a retry after an error)."""
        with self.lock:
            self._leases.pop(trial_id, None)

    def reap(self) -> list[str]:
        """Send every trial whose lease ran out back to the queue; return their ids."""
        with self.lock:
            now = self.clock()
            expired = [lease for lease in self._leases.values() if lease.expires <= now]
            for lease in expired:
                del self._leases[lease.trial_id]
                compat.requeue(self.oracle, lease.trial_id)
                silent = now - lease.renewed
                log.warning(
                    "trial %s: %s silent for %.1fs (lease %gs); back to the queue",
                    lease.trial_id,
                    lease.tuner_id,
                    silent,
                    self.timeout,
                )
                self.ledger.trial_reassigned(lease.trial_id, lease.tuner_id, silent)
            return [lease.trial_id for lease in expired]

    def restore(self) -> list[str]:
        """After a chief restart: give each trial that was running back to its holder.

        keras-tuner's ``Oracle.reload`` put them in the retry queue; the ledger knows who held
        them. Each gets a fresh lease, so a holder that is gone is noticed ``timeout`` later.
        """
        restored = []
        with self.lock:
            for trial_id in compat.retry_queue(self.oracle):
                trial = self.oracle.trials.get(trial_id)
                record = self.ledger.trials.get(trial_id)
                if trial is None or trial.status != TrialStatus.RUNNING:
                    continue  # an errored trial waiting for its retry: leave it queued
                if record is None or record.status != "RUNNING":
                    continue
                if compat.reattach(self.oracle, trial_id, record.tuner_id):
                    self.grant(trial_id, record.tuner_id)
                    restored.append(trial_id)
        if restored:
            log.info("re-granted running trials to their workers: %s", restored)
        return restored

    def _reattach(self, trial_id: str, tuner_id: str) -> bool:
        if not compat.reattach(self.oracle, trial_id, tuner_id):
            return False
        self.grant(trial_id, tuner_id)
        log.info("trial %s: re-attached to %s (it reported while the trial was queued)", trial_id, tuner_id)
        self.ledger.trial_reattached(trial_id, tuner_id)
        return True
