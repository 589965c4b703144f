"""keras-tuner's Oracle gRPC service, served concurrently, with clear errors and a ledger.

Wire-compatible with keras-tuner: same messages, same method semantics, so an unmodified
keras-tuner worker works against it. What differs from the stock servicer: errors become gRPC
status codes with a message (not a server-side traceback), every call is recorded in the
:class:`~tuner_service.study.ledger.Ledger`, and the servicer tells the chief when the search is
over instead of being polled.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuner_service import compat, wire
from tuner_service.chief.leases import Leases, StaleHolder
from tuner_service.stopping import EarlyStopping
from tuner_service.study.ledger import Ledger

log = logging.getLogger(__name__)
pb2 = compat.service_pb2()


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map exceptions to gRPC status codes; time the call; wake the chief afterwards."""

    @functools.wraps(method)
    def wrapper(self: OracleServicer, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            with self.lock:
                try:
                    return method(self, request, context)
                except Exception:
                    # keras-tuner's lock is not released when an oracle method raises; without
                    # this every other RPC thread would block on it forever.
                    compat.release_leaked_oracle_lock(self.oracle)
                    raise
        except StaleHolder as err:
            code = "ABORTED"
            context.set_trailing_metadata(err.metadata)  # why: wire.FENCE (empty for a lost lease)
            context.abort(grpc.StatusCode.ABORTED, f"{method.__name__}: {err}")
        except TrialNotFound as err:
            code = "NOT_FOUND"
            context.abort(grpc.StatusCode.NOT_FOUND, f"{method.__name__}: {err}")
        except TrialAlreadyEnded as err:
            code = "ALREADY_EXISTS"
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{method.__name__}: {err}")
        except KeyError as err:
            code = "NOT_FOUND"
            context.abort(grpc.StatusCode.NOT_FOUND, f"{method.__name__}: unknown trial {err}")
        except ValueError as err:
            code = "INVALID_ARGUMENT"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method.__name__}: {err}")
        except RuntimeError as err:
            # keras-tuner raises RuntimeError when max_consecutive_failed_trials is reached.
            code = "FAILED_PRECONDITION"
            self.fail(str(err))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"search failed: {err}")
        finally:
            for observer in self.rpc_observers:
                observer(method.__name__, code, time.perf_counter() - start)
            self.notify()

    return wrapper


def _with_status(trial: keras_tuner.engine.trial.Trial, status: str) -> Any:
    """The trial's proto with another status; the oracle's own trial is left as it is."""
    proto = trial.to_proto()
    copy = keras_tuner.engine.trial.Trial.from_proto(proto)
    copy.status = status
    return copy.to_proto()


class TrialNotFound(KeyError):
    """A report about a trial id the oracle has never handed out (NOT_FOUND)."""

    def __str__(self) -> str:
        return str(self.args[0])


class TrialAlreadyEnded(Exception):
    """A report that contradicts how a trial ended (ALREADY_EXISTS): nothing is changed."""


# Final statuses a worker may send, by the status the oracle records for them (INVALID without
# retries left becomes FAILED).
_SAME_END = {
    TrialStatus.COMPLETED: {TrialStatus.COMPLETED},
    TrialStatus.FAILED: {TrialStatus.FAILED, TrialStatus.INVALID},
}


class OracleServicer(compat.service_pb2_grpc().OracleServicer):
    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        ledger: Ledger,
        *,
        lease_timeout: float = 300.0,
        stopping: EarlyStopping | None = None,
    ):
        self.oracle = oracle
        self.ledger = ledger
        self.leases = Leases(oracle, ledger, lease_timeout)
        self.stopping = stopping
        self.stop_triggered = False
        self.failure: str | None = None
        self.told_failed: set[str] = set()  # tuner ids answered FAILED_PRECONDITION
        self.changed = threading.Condition()
        # One lock around every call's oracle work *and* its ledger record, so the two never
        # disagree and no call reads the oracle while another changes it: keras-tuner locks
        # create/update/end_trial only, and e.g. get_best_trials iterating ``trials`` while a
        # create_trial inserts one fails ("dictionary changed size during iteration").
        # gRPC still runs calls on many threads: transport, (de)serialisation, health checks
        # and the status service never wait behind a decision.
        self.lock = threading.RLock()
        # Trials whose final report carried a non-finite objective or loss: {trial id: why}.
        self._non_finite: dict[str, str] = {}
        self.rpc_observers: list[Callable[[str, str, float], None]] = []
        # (operation, seconds) for the oracle's own decisions: create_trial, end_trial.
        self.decision_observers: list[Callable[[str, float], None]] = []
        self._better = (lambda a, b: a > b) if oracle.objective.direction == "max" else (lambda a, b: a < b)

    # -- coordination with the chief -----------------------------------------------------
    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def fail(self, message: str) -> None:
        self.failure = message
        self.notify()

    def search_done(self) -> bool:
        """The oracle has said STOPPED and no trial is running or waiting to be handed out."""
        return self.stop_triggered and not self.oracle.ongoing_trials and not compat.retry_queue(self.oracle)

    def reap_leases(self) -> None:
        """Send trials whose worker went silent back to the queue (called by the chief's loop)."""
        with self.lock:  # it changes the oracle: not while a call or the state writer reads it
            reaped = self.leases.reap()
        if reaped:
            self.notify()

    def _refuse_if_failed(self, context: grpc.ServicerContext, tuner_id: str | None) -> None:
        # After keras-tuner gave up, the oracle must not be touched again (its end_trial raised
        # half-way); every worker learns of the failure at its next call and exits.
        if self.failure:
            self.told_failed.add(tuner_id or "")
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"search failed: {self.failure}")

    def workers_told_failed(self) -> bool:
        """Every worker the ledger knows (and has not released) has heard that the search failed."""
        workers = self.ledger.snapshot()["workers"]
        known = {t for t, w in workers.items() if w["state"] not in ("done", "silent")}
        return known <= self.told_failed

    def workers_released(self) -> bool:
        """Every worker that asked for work has been told STOPPED."""
        return not self.oracle.tuner_ids

    def _decide(self, operation: str, call: Callable[[], Any]) -> Any:
        """Run one oracle decision and tell the observers how long it took."""
        start = time.perf_counter()
        try:
            return call()
        finally:
            for observer in self.decision_observers:
                observer(operation, time.perf_counter() - start)

    # -- one end per trial, true verdicts (issue 11) -------------------------------------------
    # Every client gets these, stock keras-tuner workers included (no tuner id needed): a report
    # is checked against the trial as the oracle knows it *before* any lease or oracle work.
    def _known_trial(self, trial_id: str) -> keras_tuner.engine.trial.Trial:
        trial = self.oracle.trials.get(trial_id)
        if trial is None:
            raise TrialNotFound(f"trial {trial_id!r} does not exist in this study (never handed out)")
        return trial

    def _ended(self, trial: keras_tuner.engine.trial.Trial) -> bool:
        """Ended for good: COMPLETED or FAILED, and neither running nor queued again."""
        running = any(t.trial_id == trial.trial_id for t in self.oracle.ongoing_trials.values())
        return (
            trial.status in _SAME_END
            and not running
            and not compat.queued_for_retry(self.oracle, trial.trial_id)
        )

    def _refuse_after_end(
        self, trial: keras_tuner.engine.trial.Trial, what: str, tuner_id: str | None
    ) -> None:
        """A report on an ended trial that is not a repeat of its end: fenced or refused."""
        record = self.ledger.trials.get(trial.trial_id)
        ender = record.tuner_id if record else None
        if tuner_id and ender and tuner_id != ender:
            # Our worker whose trial was reassigned and finished elsewhere: it abandons it.
            raise StaleHolder(f"trial {trial.trial_id} already ended {trial.status} on {ender}")
        raise TrialAlreadyEnded(
            f"trial {trial.trial_id} already ended {trial.status}"
            + (f" (score {trial.score:g})" if trial.score is not None else "")
            + f"; {what} refused, nothing changed"
        )

    def _is_repeat_end(self, trial: keras_tuner.engine.trial.Trial, status: str) -> bool:
        return self._ended(trial) and status in _SAME_END[trial.status]

    def _check_final_report(self, trial_id: str, metrics: dict[str, float]) -> bool:
        """Whether a final report may be scored; a non-finite objective or loss fails the trial.

        The report is then kept away from the oracle (an ``inf`` would become the best score;
        keras-tuner catches only NaN) and the trial's EndTrial turns COMPLETED into INVALID.
        """
        watched = (self.oracle.objective.name, "loss")
        bad = {k: v for k, v in metrics.items() if k in watched and not math.isfinite(v)}
        if not bad:
            self._non_finite.pop(trial_id, None)  # an earlier attempt's verdict no longer applies
            return True
        detail = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        self._non_finite[trial_id] = f"non-finite final metrics ({detail}): the model diverged"
        log.warning("trial %s: %s", trial_id, self._non_finite[trial_id])
        return False

    def _true_verdict(self, trial: keras_tuner.engine.trial.Trial) -> None:
        """Turn a COMPLETED end without a usable score into INVALID (retried, then FAILED)."""
        why = self._non_finite.pop(trial.trial_id, None)
        if trial.status != TrialStatus.COMPLETED:
            return
        if why is None and not self.oracle.trials[trial.trial_id].metrics.exists(self.oracle.objective.name):
            why = f"no final value of {self.oracle.objective.name} was reported"
        if why is not None:
            trial.status = TrialStatus.INVALID
            trial.message = why

    # -- the keras-tuner Oracle service ----------------------------------------------------
    @_rpc
    def GetSpace(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb2.GetSpaceResponse(hyperparameters=self.oracle.get_space().to_proto())

    @_rpc
    def UpdateSpace(self, request: Any, context: grpc.ServicerContext) -> Any:
        hps = keras_tuner.HyperParameters.from_proto(request.hyperparameters)
        self.oracle.update_space(hps)
        return pb2.UpdateSpaceResponse()

    @_rpc
    def CreateTrial(self, request: Any, context: grpc.ServicerContext) -> Any:
        tuner_id = request.tuner_id
        self._refuse_if_failed(context, tuner_id)
        with self.leases.lock:
            self._fence_superseded(tuner_id, context)
            self.leases.reap()
            trial = self._decide("create_trial", lambda: self.oracle.create_trial(tuner_id))
            if trial.status == TrialStatus.RUNNING:
                self.leases.grant(trial.trial_id, tuner_id)  # new, from the queue, or asked again
            elif trial.status == TrialStatus.STOPPED and self.oracle.ongoing_trials:
                # Budget spent, but a running trial may still come back to the queue if its
                # worker dies: keep this worker waiting (IDLE) instead of releasing it, and
                # count it among those the chief must tell STOPPED before it exits.
                trial.status = TrialStatus.IDLE
                self.oracle.tuner_ids.add(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            # New, from the queue, or the trial this tuner id already held: a worker asks while
            # holding a trial only when its pod restarted, and that is a new attempt (resumed).
            self.ledger.trial_started(tuner_id, trial.trial_id)
        elif trial.status == TrialStatus.STOPPED:
            self.stop_triggered = True
            self.ledger.worker_seen(tuner_id, "done")
        else:  # IDLE: e.g. Hyperband waiting for a bracket to finish
            self.ledger.worker_seen(tuner_id, "waiting")
        return pb2.CreateTrialResponse(trial=trial.to_proto())

    @_rpc
    def UpdateTrial(self, request: Any, context: grpc.ServicerContext) -> Any:
        metrics = dict(request.metrics)
        md = context.invocation_metadata()
        tuner_id = wire.get(md, wire.TUNER_ID)
        self._refuse_if_failed(context, tuner_id)
        known = self._known_trial(request.trial_id)
        if self._ended(known):
            self._refuse_after_end(known, "UpdateTrial", tuner_id)
        with self.leases.lock:
            self._fence_superseded(tuner_id, context)
            self.leases.admit(request.trial_id, tuner_id)
            if wire.get(md, wire.REPORT) == wire.PROGRESS or not self._check_final_report(
                request.trial_id, metrics
            ):
                # The heartbeat: recorded, not scored (the final report is scored, as stock).
                trial = self.oracle.get_trial(request.trial_id)
            else:
                trial = self.oracle.update_trial(request.trial_id, metrics, step=request.step)
        self.ledger.trial_reported(request.trial_id, request.step, metrics)
        if self._stop_early(request, metrics, context):
            return pb2.UpdateTrialResponse(trial=_with_status(trial, TrialStatus.STOPPED))
        return pb2.UpdateTrialResponse(trial=trial.to_proto())

    def _stop_early(self, request: Any, metrics: dict, context: grpc.ServicerContext) -> bool:
        """Ask the early-stopping rule, for per-epoch reports only (see tuner_service/stopping.py)."""
        # Only our workers' per-epoch progress reports; keras-tuner's end-of-trial report (the
        # only one a stock worker sends) is never answered STOPPED.
        if self.stopping is None or wire.get(context.invocation_metadata(), wire.REPORT) != wire.PROGRESS:
            return False
        value = metrics.get(self.oracle.objective.name)
        if value is None:
            return False
        stop = self.stopping.report(request.trial_id, int(request.step), float(value))
        if stop and request.step + 1 == self.stopping.stopped.get(request.trial_id):
            log.info("trial %s: stopping early after %d epochs", request.trial_id, request.step + 1)
            self.stopping.save(compat.project_dir(self.oracle))
        return stop

    @_rpc
    def EndTrial(self, request: Any, context: grpc.ServicerContext) -> Any:
        trial = keras_tuner.engine.trial.Trial.from_proto(request.trial)
        md = context.invocation_metadata()
        if trial.message is None:  # keras-tuner's proto drops it; our workers send it alongside
            trial.message = wire.get(md, wire.MESSAGE)
        self._refuse_if_failed(context, wire.get(md, wire.TUNER_ID))
        known = self._known_trial(trial.trial_id)
        if self._is_repeat_end(known, trial.status):
            # The same end again (a retried call whose answer was lost): nothing to change or count.
            log.info("trial %s: repeated EndTrial(%s) ignored", trial.trial_id, trial.status)
            return pb2.EndTrialResponse()
        if self._ended(known):
            self._refuse_after_end(known, f"EndTrial({trial.status})", wire.get(md, wire.TUNER_ID))
        with self.leases.lock:
            self._fence_superseded(wire.get(md, wire.TUNER_ID), context)
            self.leases.admit(trial.trial_id, wire.get(md, wire.TUNER_ID))
            self._true_verdict(trial)
            try:
                self._decide("end_trial", lambda: self.oracle.end_trial(trial))
            except RuntimeError:
                # Too many consecutive failures: keras-tuner raised before saving this trial.
                # This worker is told by the FAILED_PRECONDITION answer.
                self.told_failed.add(wire.get(md, wire.TUNER_ID) or "")
                ended = self.oracle.get_trial(trial.trial_id)
                compat.save_trial(self.oracle, ended)
                self.ledger.trial_ended(trial.trial_id, ended.status, None, self._better, ended.message)
                raise
            finally:
                self.leases.release(trial.trial_id)
        ended = self.oracle.get_trial(trial.trial_id)
        status = ended.status
        if compat.queued_for_retry(self.oracle, trial.trial_id):
            status = "RETRY"
        score = ended.score if ended.status == TrialStatus.COMPLETED else None
        log.info("trial %s ended %s (score %s)", trial.trial_id, status, score)
        self.ledger.trial_ended(trial.trial_id, status, score, self._better, ended.message)
        if self.stopping is not None:
            if status == "RETRY":
                self.stopping.forget(trial.trial_id)  # its retry reports from epoch 0 again
            else:
                self.stopping.trial_ended(trial.trial_id)
            self.stopping.save(compat.project_dir(self.oracle))
        return pb2.EndTrialResponse()

    @_rpc
    def GetTrial(self, request: Any, context: grpc.ServicerContext) -> Any:
        trial = self._known_trial(request.trial_id)  # NOT_FOUND before anything else
        if wire.get(context.invocation_metadata(), wire.REPORT) == wire.RELEASE:
            self._release(request.trial_id, context)
        return pb2.GetTrialResponse(trial=trial.to_proto())

    # -- our extensions (tuner_service/wire.py) -----------------------------------------------
    def _release(self, trial_id: str, context: grpc.ServicerContext) -> None:
        """Our worker is stopping (SIGTERM) and hands its trial back: queue it for the next worker."""
        md = context.invocation_metadata()
        tuner_id = wire.get(md, wire.TUNER_ID)
        if not tuner_id:
            raise ValueError(f"a release of trial {trial_id} must name its tuner id ({wire.TUNER_ID})")
        self._refuse_if_failed(context, tuner_id)
        with self.leases.lock:
            self._fence_superseded(tuner_id, context)
            self.leases.release_to_queue(trial_id, tuner_id)

    def _fence_superseded(self, tuner_id: str | None, context: grpc.ServicerContext) -> None:
        """Raise Superseded for a process whose tuner id a newer process took over (leases.identify)."""
        self.leases.identify(tuner_id, wire.get(context.invocation_metadata(), wire.INSTANCE))

    @_rpc
    def GetBestTrials(self, request: Any, context: grpc.ServicerContext) -> Any:
        trials = self.oracle.get_best_trials(request.num_trials)
        return pb2.GetBestTrialsResponse(trials=[t.to_proto() for t in trials])
