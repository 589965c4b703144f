"""The worker's side of keras-tuner's gRPC protocol, with back-off and bounded retries.

A drop-in for ``keras_tuner``'s ``OracleClient`` (same methods, same messages). Differences:
an IDLE answer ("wait, nothing to run yet") is retried after an exponential back-off instead of
at once; an unreachable chief is retried with bounded exponential back-off until
``chief_deadline`` and then raises :class:`ChiefUnreachable` (stock waits up to an hour).
Every call names its tuner id and progress reports and error messages travel as gRPC metadata
(:mod:`tuner_service.wire`), so the chief can fence a worker whose trial was reassigned: such a
report raises :class:`TrialFenced` (docs/fault-tolerance.md). Every call also names this process
(``wire.INSTANCE``): a process whose tuner id a newer one took over gets :class:`Superseded`.
A worker that is stopping hands its trial back with :meth:`ServiceOracleClient.release_trial`.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from tuner_service import compat, wire
from tuner_service.auth import ClientSecurity

log = logging.getLogger(__name__)
pb2 = compat.service_pb2()

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Workers usually start before the chief listens. gRPC's default reconnect back-off (1 s,
# growing to 120 s) would leave a worker idle long after the chief is up; retry the connection
# every <= 0.5 s instead (one TCP SYN each: nothing for the chief).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# Both end the worker's search even when raised inside a trial (keras-tuner re-raises its
# FatalError instead of marking the trial failed and asking for the next one).
# While no chief has answered yet, each call waits for a connection this long at most, then the
# worker checks the shared storage and tries again.
FIRST_CALL_TIMEOUT = 5.0


class ChiefUnreachable(keras_tuner.errors.FatalError):
    """The chief did not answer within the deadline."""


class SearchFailed(keras_tuner.errors.FatalError):
    """The chief reports that the search has failed; there is nothing left to do."""


class SearchFinished(keras_tuner.errors.FatalError):
    """The chief is gone and the shared storage says the search finished: nothing left to do."""


class NotAuthorized(keras_tuner.errors.FatalError):
    """The chief refused this worker's token (or its lack of one): retrying cannot help."""


class TrialFenced(Exception):
    """The chief gave this worker's trial to another worker; abandon it and ask for new work."""


class Superseded(keras_tuner.errors.FatalError):
    """A newer process with this worker's tuner id took over: stop (asking again would collide)."""


# A stopping worker's release waits for the chief this long at most: the pod's grace period is short.
RELEASE_DEADLINE = 5.0


def instance_id() -> str:
    """This process, as the chief tells it from another with the same tuner id: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Backoff:
    """Exponential back-off with full jitter, capped at ``maximum`` seconds."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, sleep: Callable = time.sleep):
        self.initial, self.maximum, self._sleep = initial, maximum, sleep
        self.current = initial

    def reset(self) -> None:
        self.current = self.initial

    def wait(self, limit: float | None = None) -> float:
        delay = random.uniform(self.current / 2, self.current)
        if limit is not None:
            delay = max(0.0, min(delay, limit))
        self._sleep(delay)
        self.current = min(self.current * 2, self.maximum)
        return delay


class ServiceOracleClient:
    """Wraps a local Oracle (for its objective and settings) and talks to the chief."""

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        address: str,
        tuner_id: str,
        *,
        chief_deadline: float = 300.0,
        call_timeout: float = 60.0,
        idle_backoff: Backoff | None = None,
        search_state: Callable[[], dict[str, Any] | None] | None = None,
        security: ClientSecurity | None = None,
        stopping: Callable[[], bool] | None = None,
    ):
        """``search_state`` reads the chief's saved state (``state``, ``message``) from the shared
        storage; while the chief is
        unreachable, a "finished" or "failed" search ends the wait at once (a worker pod started
        or restarted after its search ended must not wait ``chief_deadline`` for nothing).
        ``security`` (default: from the environment) is the token to send and the CA that makes
        the channel TLS (:mod:`tuner_service.auth`).
        ``stopping`` says the worker was told to stop (tuner_service/handover.py): it then no
        longer waits for an absent chief or for a trial to become available."""
        self._oracle = oracle
        self.search_state = search_state
        self.stopping = stopping
        self.tuner_id = tuner_id
        self.address = address
        self.chief_deadline = chief_deadline
        self.call_timeout = call_timeout
        self.idle_backoff = idle_backoff or Backoff(0.05, 2.0)
        self.multi_worker = False
        self.should_report = True
        security = security or ClientSecurity.from_env()
        self._channel = security.channel(address, CHANNEL_OPTIONS)
        self.stub = compat.service_pb2_grpc().OracleStub(self._channel)
        self._answered = False  # has the chief answered a call yet (see _call)
        self.instance = instance_id()
        self._metadata: tuple[tuple[str, str | bytes], ...] = (
            (wire.TUNER_ID, tuner_id),
            (wire.INSTANCE, self.instance),
            *security.metadata,
        )

    # keras-tuner reads these settings from the oracle it was given.
    @property
    def objective(self) -> Any:
        return self._oracle.objective

    @property
    def max_trials(self) -> Any:
        return self._oracle.max_trials

    @property
    def allow_new_entries(self) -> bool:
        return self._oracle.allow_new_entries

    @property
    def tune_new_entries(self) -> bool:
        return self._oracle.tune_new_entries

    def close(self) -> None:
        self._channel.close()

    def _call(
        self,
        method: str,
        request: Any,
        extra: tuple[tuple[str, str | bytes], ...] = (),
        deadline: float | None = None,
    ) -> Any:
        """One RPC, retried while the chief is unreachable, up to ``chief_deadline`` (or ``deadline``).

        Until the chief has answered once, ``wait_for_ready`` makes a call wait for the
        connection (workers usually start before the chief listens: the call goes out the moment
        it does) instead of failing at once; the timeout bounds it. After that, a lost chief
        fails fast, is logged, and is retried with back-off.
        """
        patience = self.chief_deadline if deadline is None else deadline
        give_up = time.monotonic() + patience
        backoff = Backoff(0.2, 10.0)
        metadata = self._metadata + extra
        while True:
            # Never wait on one call past the deadline (a chief that hangs instead of refusing).
            timeout = min(self.call_timeout, max(1.0, give_up - time.monotonic()))
            if not self._answered:
                timeout = min(timeout, FIRST_CALL_TIMEOUT)  # look at the storage between waits
            try:
                response = getattr(self.stub, method)(
                    request, timeout=timeout, wait_for_ready=not self._answered, metadata=metadata
                )
                self._answered = True
                return response
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise SearchFailed(err.details()) from None
                if err.code() == grpc.StatusCode.ABORTED:
                    if wire.get(_trailing(err), wire.FENCE) == wire.SUPERSEDED:
                        raise Superseded(err.details()) from None
                    raise TrialFenced(err.details()) from None
                if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise NotAuthorized(f"{err.code().name}: {err.details()}") from None
                if err.code() not in RETRYABLE:
                    raise
                self._raise_if_search_ended()
                if deadline is None:
                    self._raise_if_stopping("while the chief was unreachable")
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    message = (
                        f"chief at {self.address} unreachable for {patience:.0f}s "
                        f"({err.code().name}: {err.details()})"
                    )
                    log.error("giving up: %s", message)
                    raise ChiefUnreachable(message) from None
                # The details tell a chief that is down from a TLS handshake that failed.
                log.warning(
                    "chief unreachable (%s: %s); retrying for %.0fs more",
                    err.code().name,
                    err.details(),
                    remaining,
                )
                backoff.wait(limit=remaining)  # the last try lands on the deadline

    def _raise_if_stopping(self, where: str) -> None:
        if self.stopping is not None and self.stopping():
            from tuner_service.handover import HandedOver

            raise HandedOver(None, where)

    def _raise_if_search_ended(self) -> None:
        saved = (self.search_state() if self.search_state else None) or {}
        if saved.get("state") == "failed":
            raise SearchFailed(f"search failed: {saved.get('message') or 'see the chief log'}")
        if saved.get("state") == "finished":
            raise SearchFinished("the chief is gone and the shared storage says the search finished")

    # -- the Oracle interface used by keras-tuner's Tuner ---------------------------------
    def get_space(self) -> keras_tuner.HyperParameters:
        response = self._call("GetSpace", pb2.GetSpaceRequest())
        return keras_tuner.HyperParameters.from_proto(response.hyperparameters)

    def update_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        self._call("UpdateSpace", pb2.UpdateSpaceRequest(hyperparameters=hyperparameters.to_proto()))

    def create_trial(self, tuner_id: str) -> Trial:
        self.idle_backoff.reset()
        while True:
            response = self._call("CreateTrial", pb2.CreateTrialRequest(tuner_id=tuner_id))
            trial = Trial.from_proto(response.trial)
            if trial.status != TrialStatus.IDLE:
                return trial
            self._raise_if_stopping("while waiting for a trial")
            self.idle_backoff.wait()  # the oracle asked us to wait; never spin

    def update_trial(self, trial_id: str, metrics: dict[str, float], step: int = 0) -> Trial:
        response = self._call(
            "UpdateTrial", pb2.UpdateTrialRequest(trial_id=trial_id, metrics=metrics, step=step)
        )
        return Trial.from_proto(response.trial)

    def report_progress(self, trial_id: str, metrics: dict[str, float], step: int) -> Trial:
        """The per-epoch report: the heartbeat that keeps this worker's lease on the trial.

        The answer is the trial as the chief sees it; status STOPPED means "stop training this
        trial now" (early stopping, tuner_service/stopping.py)."""
        request = pb2.UpdateTrialRequest(trial_id=trial_id, metrics=metrics, step=step)
        response = self._call("UpdateTrial", request, ((wire.REPORT, wire.PROGRESS),))
        return Trial.from_proto(response.trial)

    def end_trial(self, trial: Trial) -> None:
        extra = ((wire.MESSAGE, wire.encode_message(trial.message)),) if trial.message else ()
        self._call("EndTrial", pb2.EndTrialRequest(trial=trial.to_proto()), extra)

    def release_trial(self, trial_id: str, deadline: float = RELEASE_DEADLINE) -> None:
        """Hand the trial back: this worker is stopping (``wire.RELEASE``, on GetTrial).

        The chief queues it at once for the next worker, which resumes it from its last epoch
        backup. Waits for an unreachable chief ``deadline`` seconds at most (then the trial moves
        when its lease runs out). A stock chief just answers the GetTrial.
        """
        request = pb2.GetTrialRequest(trial_id=trial_id)
        self._call("GetTrial", request, ((wire.REPORT, wire.RELEASE),), deadline=deadline)

    def get_trial(self, trial_id: str) -> Trial:
        response = self._call("GetTrial", pb2.GetTrialRequest(trial_id=trial_id))
        return Trial.from_proto(response.trial)

    def get_best_trials(self, num_trials: int = 1) -> list[Trial]:
        response = self._call("GetBestTrials", pb2.GetBestTrialsRequest(num_trials=num_trials))
        return [Trial.from_proto(t) for t in response.trials]


def _trailing(err: grpc.RpcError) -> wire.Metadata:
    trailing = getattr(err, "trailing_metadata", None)
    return (trailing() if callable(trailing) else None) or ()
