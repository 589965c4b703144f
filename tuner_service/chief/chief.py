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
from tuner_service.chief.persistence import WriteBehind
from tuner_service.chief.server import make_server
from tuner_service.chief.servicer import OracleServicer
from tuner_service.spec import StudySpec
from tuner_service.stopping import build_early_stopping
from tuner_service.study import files
from tuner_service.study.ledger import Ledger

log = logging.getLogger(__name__)

# service_state.json is rewritten at most this often while trials start and end (every write
# is the whole ledger); state changes are written at once.
LEDGER_SAVE_INTERVAL = 0.25


@dataclass(frozen=True)
class Outcome:
    state: str  # finished | failed | interrupted
    message: str = ""


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
    ):
        self.spec = spec
        self.oracle = oracle
        self.linger = linger
        self.ledger = Ledger(
            spec.name,
            compat.trial_budget(oracle),
            spec.project_dir / files.STATE,
            save_interval=LEDGER_SAVE_INTERVAL,
        )
        self.ledger.restore()
        self.stopping = build_early_stopping(spec, oracle.objective.direction)
        if self.stopping is not None:
            self.stopping.restore(spec.project_dir)  # a restarted chief keeps its histories
        self.servicer = OracleServicer(
            oracle, self.ledger, lease_timeout=spec.lease_timeout, stopping=self.stopping
        )
        self._resume()
        self.writer = WriteBehind(oracle, self.servicer.lock)  # after _resume: it writes directly
        self.security = security or ServerSecurity()  # the status server gets the same
        self.grpc = make_server(self.servicer, address, security=self.security)
        self.server, self.port = self.grpc.server, self.grpc.port
        self._stop_reason: str | None = None
        self._started = time.monotonic()
        self._served_one = False
        self.stop_signal: int | None = None  # the signal that stopped the chief, if one did
        self.servicer.rpc_observers.append(self._log_first_rpc)

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
        with s.changed:
            while not (self._stop_reason or s.failure or s.search_done()):
                # Woken by every RPC; the timeout bounds how late an expired lease is noticed.
                expiry = s.leases.next_expiry()
                poll = self.poll_interval
                s.changed.wait(timeout=poll if expiry is None else min(poll, expiry + 0.01))
                s.reap_leases()
            if self._stop_reason:
                return Outcome("interrupted", f"stopped by {self._stop_reason}")
            if s.failure:
                # Keep answering "search failed" until every worker has heard it: a live worker
                # calls at least once per lease_timeout (its epoch report), so none is left
                # retrying an absent chief until its chief_deadline.
                deadline = time.monotonic() + self.spec.lease_timeout
                while not s.workers_told_failed() and not self._stop_reason:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    s.changed.wait(timeout=remaining)
                return Outcome("failed", s.failure)
            deadline = time.monotonic() + self.linger
            while not s.workers_released() and not self._stop_reason:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("workers never asked again: %s", sorted(self.oracle.tuner_ids))
                    break
                s.changed.wait(timeout=remaining)
        return Outcome("finished")

    def shutdown(self, outcome: Outcome) -> None:
        """Stop accepting work, persist the oracle and ledger, close the port."""
        self.grpc.set_serving(False)
        self.oracle.save()
        self.writer.close()  # everything on disk before results are read or the pod ends
        if outcome.state != "interrupted":  # a restarted chief resumes interrupted trials
            running = {t.trial_id for t in self.oracle.ongoing_trials.values()}
            checkpoints.remove_ended(self.spec.project_dir, running)
        state = {"finished": "finished", "failed": "failed"}.get(outcome.state, "interrupted")
        self.ledger.set_state(state, outcome.message or None)
        self.ledger.close()
        self.server.stop(grace=0.5).wait()

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
