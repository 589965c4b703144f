"""The Chief class: owns the oracle's server, knows when the search is over, shuts down cleanly."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

import grpc
import keras_tuner

from tuner_service.chief.ledger import STATE_FILE, Ledger
from tuner_service.chief.server import make_server, set_not_serving
from tuner_service.chief.servicer import OracleServicer
from tuner_service.chief.stopping import build_early_stopping
from tuner_service.spec import StudySpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    state: str  # finished | failed | interrupted
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "finished"


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
        interceptors: tuple[grpc.ServerInterceptor, ...] = (),
    ):
        self.spec = spec
        self.oracle = oracle
        self.linger = linger
        max_trials = getattr(oracle, "max_trials", None)
        self.ledger = Ledger(spec.name, max_trials, spec.project_dir / STATE_FILE)
        self.ledger.restore()
        self.stopping = build_early_stopping(spec, oracle.objective.direction)
        if self.stopping is not None:
            self.stopping.restore(spec.project_dir)  # a restarted chief keeps its histories
        self.servicer = OracleServicer(oracle, self.ledger, self.stopping)
        self.server, self.health, self.port = make_server(self.servicer, address, interceptors=interceptors)
        self._stop_reason: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()
        self.ledger.set_state("running")
        log.info("chief serving study %r on port %d", self.spec.name, self.port)

    def request_stop(self, reason: str) -> None:
        """Thread- and signal-safe: ask :meth:`wait` to return."""
        self._stop_reason = reason
        # Never take the condition's lock inside a signal handler; wake the waiter from a thread.
        threading.Thread(target=self.servicer.notify, daemon=True).start()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self) -> Outcome:
        """Block until the search is over, has failed, or a stop was requested."""
        s = self.servicer
        with s.changed:
            while not (self._stop_reason or s.failure or s.search_done()):
                s.changed.wait(timeout=1.0)  # woken by every RPC; the timeout is a safety net
            if self._stop_reason:
                return Outcome("interrupted", f"stopped by {self._stop_reason}")
            if s.failure:
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
        set_not_serving(self.health)
        self.oracle.save()
        state = {"finished": "finished", "failed": "failed"}.get(outcome.state, "interrupted")
        self.ledger.set_state(state, outcome.message or None)
        self.server.stop(grace=0.5).wait()

    def serve(self) -> Outcome:
        self.start()
        outcome = self.wait()
        self.shutdown(outcome)
        return outcome
