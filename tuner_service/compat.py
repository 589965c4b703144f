"""Every place tuner-service touches keras-tuner beyond its documented public API.

keras-tuner is a dependency, not a fork. Its distributed mode keeps the gRPC messages and stubs
in ``keras_tuner.src.protos``; we must use those exact messages to stay wire-compatible with
stock workers. Keep all such imports here, check the version range, and test them
(tests/test_compat.py), so an upgrade breaks in one obvious place.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from collections.abc import Callable
from importlib.metadata import version
from types import ModuleType
from typing import Any

import keras_tuner
from keras_tuner.src import utils as kt_utils
from packaging.version import Version

from tuner_service.study import files
from tuner_service.study.files import write_text_atomic

SUPPORTED = (Version("1.4.7"), Version("1.5"))

log = logging.getLogger(__name__)


def check_version() -> str:
    found = version("keras-tuner")
    lo, hi = SUPPORTED
    if not (lo <= Version(found) < hi):
        raise RuntimeError(
            f"tuner-service supports keras-tuner >={lo},<{hi}; found {found}. "
            "Install a supported version (pip install 'keras-tuner>=1.4.7,<1.5')."
        )
    return found


def service_pb2() -> ModuleType:
    """keras-tuner's ``service_pb2`` (request/response messages of the Oracle service)."""
    from keras_tuner.src import protos

    return protos.get_service()


def service_pb2_grpc() -> ModuleType:
    """keras-tuner's ``service_pb2_grpc`` (the Oracle servicer base class and stub)."""
    from keras_tuner.src import protos

    return protos.get_service_grpc()


def keras_tuner_pb2() -> ModuleType:
    """keras-tuner's ``keras_tuner_pb2`` (the Trial message and its TrialStatus enum)."""
    from keras_tuner.src import protos

    return protos.get_proto()


def oracle_service_name() -> str:
    """Fully-qualified gRPC service name, used for health checks."""
    return service_pb2().DESCRIPTOR.services_by_name["Oracle"].full_name


def project_dir(oracle: keras_tuner.Oracle) -> str:
    """Where the oracle keeps oracle.json and trial_*/ (set by the Tuner that owns it)."""
    return oracle._project_dir


def oracle_file(oracle: keras_tuner.Oracle) -> str:
    """The path of ``oracle.json``."""
    return oracle._get_oracle_fname()


def trial_file(oracle: keras_tuner.Oracle, trial_id: str) -> str:
    """The path of ``trial_<id>/trial.json`` (creating the folder, as keras-tuner does)."""
    return os.path.join(oracle._get_trial_dir(trial_id), files.TRIAL)


def redirect_oracle_writes(
    oracle: keras_tuner.Oracle,
    save: Callable[[], None] | None,
    save_trial: Callable[[Any], None] | None,
) -> None:
    """Route the oracle's ``save()`` and ``_save_trial(trial)`` (every write keras-tuner's
    Oracle makes) to the given callables on this instance; ``None`` restores keras-tuner's."""
    for name, fn in (("save", save), ("_save_trial", save_trial)):
        if fn is None:
            oracle.__dict__.pop(name, None)
        else:
            setattr(oracle, name, fn)


def queued_for_retry(oracle: keras_tuner.Oracle, trial_id: str) -> bool:
    """Whether ``end_trial`` sent the trial back for a retry (INVALID with retries left)."""
    return trial_id in oracle._retry_queue


# -- fault tolerance (docs/fault-tolerance.md) --------------------------------------------------
# keras-tuner keeps the queue of trials to hand out again in ``Oracle._retry_queue`` and the
# running trials in ``Oracle.ongoing_trials`` ({tuner_id: Trial}). The helpers below are the only
# code that changes them from outside keras-tuner. Each one runs under the oracle's own lock
# (``keras_tuner.synchronized`` keys the lock on the first argument), so it is atomic with respect
# to create_trial / update_trial / end_trial served on other threads.


def retry_queue(oracle: keras_tuner.Oracle) -> list[str]:
    """Trial ids waiting to be handed out again (a copy)."""
    return list(oracle._retry_queue)


@keras_tuner.synchronized
def requeue(oracle: keras_tuner.Oracle, trial_id: str) -> str | None:
    """Take a running trial away from its worker and queue it for the next one to ask.

    Not a failure: keras-tuner counts runs in ``end_trial`` only, so the trial's retry budget is
    untouched. Returns the tuner id that held it (None if nobody did).
    """
    holder = next((t for t, trial in oracle.ongoing_trials.items() if trial.trial_id == trial_id), None)
    if holder is not None:
        del oracle.ongoing_trials[holder]
    if trial_id not in oracle._retry_queue:
        oracle._retry_queue.append(trial_id)
    oracle.save()
    return holder


@keras_tuner.synchronized
def hand_back(oracle: keras_tuner.Oracle, trial_id: str, tuner_id: str) -> str | None:
    """A worker that is stopping gave its trial back: queue the trial (as :func:`requeue`) and
    forget the worker, so the chief does not wait at the end of the search to tell it STOPPED."""
    oracle.tuner_ids.discard(tuner_id)
    return requeue(oracle, trial_id)


@keras_tuner.synchronized
def reattach(oracle: keras_tuner.Oracle, trial_id: str, tuner_id: str) -> bool:
    """Give a queued trial back to ``tuner_id`` (which still has its training state).

    Only when the trial is waiting in the queue and the worker holds no other trial.
    """
    from keras_tuner.engine.trial import TrialStatus

    if trial_id not in oracle._retry_queue or tuner_id in oracle.ongoing_trials:
        return False
    oracle._retry_queue.remove(trial_id)
    trial = oracle.trials[trial_id]
    trial.status = TrialStatus.RUNNING
    oracle.ongoing_trials[tuner_id] = trial
    oracle.tuner_ids.add(tuner_id)
    _ensure_display(oracle, trial_id)
    oracle.save()
    return True


def _ensure_display(oracle: keras_tuner.Oracle, trial_id: str) -> None:
    # end_trial prints the trial's duration from the start its display recorded when the trial
    # was handed out; create_trial saves oracle.json *before* recording it, so a reloaded oracle
    # may lack it and end_trial would raise KeyError after the trial was already saved.
    display = oracle._display
    now = datetime.datetime.now()
    display.search_start = display.search_start or now
    display.trial_start.setdefault(trial_id, now)
    display.trial_number.setdefault(trial_id, len(oracle.trials))


@keras_tuner.synchronized
def drop_ended_from_retry_queue(oracle: keras_tuner.Oracle) -> list[str]:
    """After a reload: never hand out again a trial that has already ended.

    ``Oracle.end_trial`` saves ``oracle.json`` *before* it removes the trial from
    ``ongoing_trials``; a chief killed in between reloads a COMPLETED trial as "ongoing", and
    ``Oracle.reload`` puts it in the retry queue, where it would be run (and overwritten) again.
    Also removes duplicates. Returns the ids dropped.
    """
    from keras_tuner.engine.trial import TrialStatus

    kept: list[str] = []
    dropped: list[str] = []
    for trial_id in oracle._retry_queue:
        trial = oracle.trials.get(trial_id)
        ended = trial is None or trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)
        (dropped if ended or trial_id in kept else kept).append(trial_id)
    if dropped:
        oracle._retry_queue[:] = kept
        oracle.save()
    return dropped


def save_trial(oracle: keras_tuner.Oracle, trial: Any) -> None:
    """Write ``trial_<id>/trial.json`` (keras-tuner skips it when end_trial raises)."""
    oracle._save_trial(trial)


def _atomic_save_json(path: str, obj: Any) -> str:
    text = json.dumps(obj)
    if "://" in str(path):  # gs:// and friends: no rename guarantee, keep keras-tuner's write
        return _stock_save_json(path, obj)
    write_text_atomic(path, text)
    return text


_stock_save_json: Callable[[str, Any], str] = kt_utils.save_json


def install_atomic_json() -> None:
    """Make keras-tuner write oracle.json, trial.json and tuner_*.json via temp file + rename.

    keras-tuner's ``utils.save_json`` truncates the file and writes it; a process killed
    mid-write leaves a half-written JSON that makes the next chief fail to reload. Every
    keras-tuner state file goes through that one function (``Stateful.save``), so we replace it.
    Idempotent.
    """
    kt_utils.save_json = _atomic_save_json


class FitCallbacks:
    """Mixin for a ``keras_tuner.Tuner``: add callbacks to every ``model.fit`` of a trial.

    ``fit_callbacks(trial, execution)`` is called once per execution; its callbacks run *after*
    keras-tuner's own (so after ``Tuner.on_epoch_end`` and its hooks). Uses
    ``Tuner._build_and_fit_model``, keras-tuner's documented extension point for AutoKeras.
    """

    def fit_callbacks(self, trial: Any, execution: int) -> list[Any]:
        return []

    def on_trial_begin(self, trial: Any) -> None:
        self._fit_execution = 0
        super().on_trial_begin(trial)  # type: ignore[misc]

    def _build_and_fit_model(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        execution = getattr(self, "_fit_execution", 0)
        self._fit_execution = execution + 1
        extra = self.fit_callbacks(trial, execution)
        if extra:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), *extra]
        return super()._build_and_fit_model(trial, *args, **kwargs)  # type: ignore[misc]


class _SpaceBuildFailed(Exception):
    pass


class TolerantSpace:
    """Mixin for a ``keras_tuner.Tuner``: a ``build`` that raises while the space is declared
    does not stop the process.

    ``Tuner.__init__`` builds the hypermodel with default values to declare the search space
    (``BaseTuner._populate_initial_space``, keras-tuner's own extension point for AutoKeras);
    a model that cannot be built for *those* values would crash the chief (and every worker)
    before ``max_retries_per_trial`` applies. Here the space keeps what ``build`` declared before
    it raised; a trial whose values make ``build`` raise fails on its worker like any other
    trial error (retried, then FAILED with the message) and the search goes on.
    ``space_error`` says what happened (None when the space was declared in full).
    """

    space_error: str | None = None

    def _populate_initial_space(self) -> None:
        hypermodel = self.hypermodel  # type: ignore[attr-defined]
        if hypermodel is None:
            return
        own = "build" in vars(hypermodel)
        original = hypermodel.build

        def build(hp: Any) -> Any:
            try:
                return original(hp)
            except Exception as err:
                self.oracle.update_space(hp)  # type: ignore[attr-defined]  # what it declared so far
                raise _SpaceBuildFailed(f"{type(err).__name__}: {err}") from err

        hypermodel.build = build
        try:
            super()._populate_initial_space()  # type: ignore[misc]
        except _SpaceBuildFailed as err:
            self.space_error = str(err)
            log.warning(
                "the model's build raised for the default hyperparameters (%s); the search goes on "
                "with the hyperparameters declared before that, and trials whose values fail to build "
                "fail on their workers",
                err,
            )
        finally:
            if own:
                hypermodel.build = original
            else:
                del hypermodel.build


def release_leaked_oracle_lock(oracle: keras_tuner.Oracle) -> bool:
    """Release the oracle lock if an exception left it held by this thread.

    ``keras_tuner.synchronized`` releases its lock only when the method returns: an exception
    (``update_trial`` for an unknown trial, ``end_trial`` raising "too many consecutive
    failures") leaves the oracle locked forever and every other RPC thread blocks on it. Call this
    after an oracle call raised, from code that does not itself hold the lock.
    """
    from keras_tuner.src.engine import oracle as oracle_module

    if oracle_module.THREADS[oracle] != threading.current_thread().name:
        return False
    oracle_module.THREADS[oracle] = None
    oracle_module.LOCKS[oracle].release()
    return True


def random_values(oracle: keras_tuner.Oracle) -> dict[str, Any] | None:
    """A random untried point from the oracle's seeded sequence (None if none is left).

    Stock BayesianOptimizationOracle and RandomSearchOracle use it for their random phase;
    calling it too gives the fast BO oracle the same initial design as stock for the same seed.
    """
    return oracle._random_values()


def attach_project_dir(oracle: keras_tuner.Oracle, directory: str, project_name: str) -> None:
    """Attach storage as ``keras_tuner.Tuner`` does (benchmarks drive oracles without a Tuner)."""
    oracle._set_project_dir(directory, project_name)


def trial_budget(oracle: keras_tuner.Oracle) -> int | None:
    """How many trials the search runs: ``max_trials``, or what Hyperband's brackets plan."""
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle):
        return hyperband_planned_trials(oracle)
    return getattr(oracle, "max_trials", None)


def hyperband_planned_trials(oracle: keras_tuner.oracles.HyperbandOracle) -> int | None:
    """Trials a Hyperband search creates: every round of every bracket, times the iterations.

    keras-tuner gives Hyperband no ``max_trials``; its brackets fix the count instead (each
    round of successive halving is a new trial that continues a previous one). Uses its private
    bracket arithmetic so the figure follows keras-tuner's own. None for endless iterations.
    A search may end with fewer trials when the space runs out of new values.
    """
    if oracle.hyperband_iterations == float("inf"):
        return None
    per_iteration = sum(
        oracle._get_size(bracket, round_)
        for bracket in range(oracle._get_num_brackets())
        for round_ in range(oracle._get_num_rounds(bracket))
    )
    return int(oracle.hyperband_iterations) * per_iteration
