"""The Chief class: owns the oracle's server, knows when the search is over, shuts down cleanly."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuner_service import checkpoints, compat
from tuner_service.auth import ServerSecurity
from tuner_service.chief.persistence import WriteBehind, WriteHealth
from tuner_service.chief.server import make_server
from tuner_service.chief.servicer import OracleServicer
from tuner_service.spec import StudySpec
from tuner_service.stopping import build_early_stopping
from tuner_service.study import files
from tuner_service.study.ledger import Ledger
from tuner_service.study.lock import LockLost, StudyLock

log = logging.getLogger(__name__)

# service_state.json is rewritten at most this often while trials start and end (every write
# is the whole ledger); state changes are written at once.
LEDGER_SAVE_INTERVAL = 0.25


@dataclass(frozen=True)
class Outcome:
    # finished | failed | interrupted (a signal) | stalled (no worker within worker_deadline) |
    # fenced (another chief took the study over) | unwritable (the state cannot be saved)
    state: str
    message: str = ""


# The ledger state each outcome leaves on disk (a fenced chief writes nothing).
LEDGER_STATE = {"finished": "finished", "failed": "failed"}  # the rest: interrupted (resumable)


class Chief:
    """Serve ``oracle`` on ``address`` until every trial has ended, then stop.

    ``linger`` bounds how long the chief waits, once the search is over, for workers that have
    not yet been told STOPPED (a dead worker never asks again). Workers that are alive ask right
    after their last trial ends, so in practice the chief exits within milliseconds.
    """

    def __init__(
        self,
        spec: StudySpec,
        oracle: keras_tuner.Oracle,
        *,
        address: str,
        linger: float = 10.0,
        security: ServerSecurity | None = None,
        lock: StudyLock | None = None,
        write_deadline: float | None = None,
    ):
        self.spec = spec
        self.oracle = oracle
        self.linger = linger
        self.lock = lock
        self._halt: Outcome | None = None  # set from another thread: stop with this outcome
        health_kwargs = {} if write_deadline is None else {"deadline": write_deadline}
        self.writes = WriteHealth(lambda why: self.halt("unwritable", why), **health_kwargs)
        guard = lock.check if lock is not None else None
        self.ledger = Ledger(
            spec.name,
            compat.trial_budget(oracle),
            spec.project_dir / files.STATE,
            save_interval=LEDGER_SAVE_INTERVAL,
            guard=guard,
            on_write=lambda err: self.writes.report(files.STATE, err),
        )
        self.ledger.restore()
        self.stopping = build_early_stopping(spec, oracle.objective.direction)
        if self.stopping is not None:
            self.stopping.restore(spec.project_dir)  # a restarted chief keeps its histories
        self.servicer = OracleServicer(
            oracle, self.ledger, lease_timeout=spec.lease_timeout, stopping=self.stopping
        )
        self._resume()
        # After _resume: it writes directly.
        self.writer = WriteBehind(oracle, self.servicer.lock, guard=guard, health=self.writes)
        self.security = security or ServerSecurity()  # the status server gets the same
        self.grpc = make_server(self.servicer, address, security=self.security)
        self.server, self.port = self.grpc.server, self.grpc.port
        self._stop_reason: str | None = None
        self._started = time.monotonic()
        self._served_one = False
        self.stop_signal: int | None = None  # the signal that stopped the chief, if one did
        self._last_contact = time.monotonic()  # of any worker RPC (worker_deadline)
        self.servicer.rpc_observers.append(self._log_first_rpc)
        self.servicer.rpc_observers.append(self._contact)
        if lock is not None:  # its heartbeat runs since the lock was taken
            lock.on_lost.append(lambda why: self.halt("fenced", why))
            if lock.lost:
                self.halt("fenced", lock.lost)

    def _resume(self) -> None:
        """On storage a previous chief used: make oracle, ledger and leases agree again.

        keras-tuner has reloaded oracle.json (running trials are now in its retry queue).
        """
        dropped = compat.drop_ended_from_retry_queue(self.oracle)
        if dropped:
            log.warning("trials %s had already ended; not running them again", dropped)
        # The previous chief may have died between the oracle's end_trial and the ledger's.
        for trial_id, record in list(self.ledger.trials.items()):
            trial = self.oracle.trials.get(trial_id)
            ended = trial is not None and trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)
            if ended and record.status != trial.status:
                score = trial.score if trial.status == TrialStatus.COMPLETED else None
                self.ledger.trial_ended(trial_id, trial.status, score, self.servicer._better, trial.message)
        self.servicer.leases.restore()

    def search_over(self) -> bool:
        """A search that ended before this chief started (e.g. killed during the final retrain):
        saved as finished, or every trial of its budget ended and none running or queued."""
        if self.oracle.ongoing_trials or compat.retry_queue(self.oracle):
            return False
        budget = compat.trial_budget(self.oracle)
        saved = files.read_json(self.spec.project_dir / files.STATE) or {}
        if saved.get("state") == "finished" and saved.get("max_trials") == budget:
            return True  # also a search that ran out of new values early; a larger budget goes on
        ended = [
            t for t in self.oracle.trials.values() if t.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)
        ]
        return budget is not None and len(ended) >= budget

    def _contact(self, method: str, code: str, seconds: float) -> None:
        self._last_contact = time.monotonic()

    def halt(self, state: str, message: str) -> None:
        """Thread-safe: stop serving with this outcome (the first one wins)."""
        if self._halt is None:
            self._halt = Outcome(state, message)
            log.error("stopping: %s", message)
        threading.Thread(target=self.servicer.notify, daemon=True).start()

    def _stalled(self) -> Outcome | None:
        deadline = self.spec.worker_deadline
        silent = time.monotonic() - self._last_contact
        if not deadline or silent < deadline:
            return None
        counts = self.ledger.counts()
        ended = counts.get("COMPLETED", 0) + counts.get("FAILED", 0)
        budget = compat.trial_budget(self.oracle)
        left = f"{budget - ended} of {budget}" if budget is not None else "some"
        return Outcome(
            "stalled",
            f"no worker called the chief for {silent:.0f}s (worker_deadline {deadline:g}s) while {left} "
            f"trials remain: are the workers running? The state is saved: start workers and the chief "
            f"again to resume",
        )

    def _log_first_rpc(self, method: str, code: str, seconds: float) -> None:
        # How long a (re)started chief takes to serve its workers again (docs/fault-tolerance.md).
        if self._served_one or code != "OK":
            return
        self._served_one = True
        log.info(
            "first RPC (%s) served %.2fs after the server was built, %.2fs after the process started",
            method,
            time.monotonic() - self._started,
            _process_uptime(),
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()
        self._last_contact = time.monotonic()
        self.ledger.set_state("running")
        log.info(
            "chief serving study %r on port %d (%s)", self.spec.name, self.port, self.security.describe()
        )

    def request_stop(self, reason: str) -> None:
        """Thread- and signal-safe: ask :meth:`wait` to return."""
        self._stop_reason = reason
        # Never take the condition's lock inside a signal handler; wake the waiter from a thread.
        threading.Thread(target=self.servicer.notify, daemon=True).start()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop_signal = signum
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    #: Seconds between looks at the leases when no call wakes the loop. A class attribute so a
    #: test can lengthen it and tell a wake-up by a call from a poll with a bound that has margin.
    poll_interval: float = 1.0

    def wait(self) -> Outcome:
        """Block until the search is over, has failed, or a stop was requested."""
        s = self.servicer
        while True:
            with s.changed:
                if self._stop_reason or s.failure or s.search_done():
                    break
                # Woken by every RPC; the timeout bounds how late an expired lease is noticed.
                expiry = s.leases.next_expiry()
                poll = self.poll_interval
                s.changed.wait(timeout=poll if expiry is None else min(poll, expiry + 0.01))
            # The rest runs without the condition's lock: every RPC takes it to wake this loop
            # (servicer.notify), and reaping waits for the oracle's lock behind any decision in
            # progress. Reaping while holding it made each finished call wait for the slowest
            # queued decision: 256 workers on a 1,000-trial Bayesian chief saw p99 ~100 ms.
            if self._halt is not None:
                return self._halt
            stalled = self._stalled()
            if stalled is not None:
                log.error("%s", stalled.message)
                return stalled
            expiry = s.leases.next_expiry()
            if expiry is not None and expiry <= 0:  # the oracle lock only when a lease ran out
                s.reap_leases()
        with s.changed:
            if self._halt is not None:
                return self._halt
            if self._stop_reason:
                return Outcome("interrupted", f"stopped by {self._stop_reason}")
            if s.failure:
                # Keep answering "search failed" until every worker has heard it: a live worker
                # calls at least once per lease_timeout (its epoch report), so none is left
                # retrying an absent chief until its chief_deadline.
                deadline = time.monotonic() + self.spec.lease_timeout
                while not s.workers_told_failed() and not (self._stop_reason or self._halt):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    s.changed.wait(timeout=remaining)
                return self._halt or Outcome("failed", s.failure)
            deadline = time.monotonic() + self.linger
            while not s.workers_released() and not (self._stop_reason or self._halt):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("workers never asked again: %s", sorted(self.oracle.tuner_ids))
                    break
                s.changed.wait(timeout=remaining)
        return self._halt or Outcome("finished")

    def shutdown(self, outcome: Outcome) -> None:
        """Stop accepting work, persist the oracle and ledger, close the port.

        A fenced chief writes nothing (the study belongs to another chief now); an unwritable one
        tries once more and says what it could not write.
        """
        self.grpc.set_serving(False)
        try:
            if outcome.state == "fenced":
                self.writer.close(write=False)
                self.ledger.close(write=False)
                return
            for persist in (self._persist_oracle, self._persist_ledger):
                try:
                    persist(outcome)
                except (OSError, LockLost) as err:
                    log.error("could not save the final state: %s", err)
                    if outcome.state != "unwritable":
                        raise
        finally:
            self.server.stop(grace=0.5).wait()

    def _persist_oracle(self, outcome: Outcome) -> None:
        try:
            self.oracle.save()
        finally:
            self.writer.close()  # everything on disk before results are read or the pod ends
        if outcome.state in ("finished", "failed"):  # a restarted chief resumes the others' trials
            running = {t.trial_id for t in self.oracle.ongoing_trials.values()}
            checkpoints.remove_ended(self.spec.project_dir, running)

    def _persist_ledger(self, outcome: Outcome) -> None:
        stopped = self.ledger.workers_stopped()
        if stopped:
            log.info("workers no longer served: %s", stopped)
        self.ledger.set_state(LEDGER_STATE.get(outcome.state, "interrupted"), outcome.message or None)
        self.ledger.close()

    def serve(self) -> Outcome:
        self.start()
        outcome = self.wait()
        self.shutdown(outcome)
        return outcome


def _process_uptime() -> float:
    """Seconds since this process started (Linux /proc; NaN elsewhere)."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot_uptime = float(open("/proc/uptime").read().split()[0])
        return boot_uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")
