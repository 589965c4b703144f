"""Build keras-tuner oracles and tuners from a study spec.

The chief and every worker build the *same* tuner from the same study file; keras-tuner's
environment contract (``KERASTUNER_TUNER_ID``...) decides which role it plays. Only public
keras-tuner classes are used here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import keras_tuner

from tuner_service import checkpoints, compat
from tuner_service.handover import Handover
from tuner_service.spec import BayesianTuner, HyperbandTuner, RandomTuner, StudySpec

log = logging.getLogger(__name__)


class TunerConfigError(Exception):
    """The study's tuner settings are rejected by keras-tuner (e.g. an unknown objective)."""


def make_objective(spec: StudySpec) -> keras_tuner.Objective:
    """The oracle's objective: the study's name and direction (tuner_service/objective.py)."""
    from tuner_service import objective

    try:
        return objective.of_study(spec).to_keras_tuner()
    except objective.ObjectiveError as err:
        raise TunerConfigError(str(err)) from None


def build_oracle(spec: StudySpec) -> keras_tuner.Oracle:
    oracle = _oracle(spec)
    # keras-tuner's console display is off: it numbers trials from 1 ("Running Trial #1" for
    # trial 0) beside the 0-based trial ids every other line uses; the chief logs each trial's
    # end by id, and trial.json holds its hyperparameters.
    oracle.verbose = 0
    return oracle


def _oracle(spec: StudySpec) -> keras_tuner.Oracle:
    common: dict[str, Any] = {
        "objective": make_objective(spec),
        "seed": spec.seed,
        "max_retries_per_trial": spec.max_retries_per_trial,
        "max_consecutive_failed_trials": spec.max_consecutive_failed_trials,
    }
    t = spec.tuner
    if isinstance(t, BayesianTuner):
        if t.impl == "stock":
            bayesian: type[keras_tuner.Oracle] = keras_tuner.oracles.BayesianOptimizationOracle
        else:
            from tuner_service.oracles import FastBayesianOptimizationOracle as bayesian
        return bayesian(
            max_trials=spec.max_trials,
            num_initial_points=t.num_initial_points,
            alpha=t.alpha,
            beta=t.beta,
            **common,
        )
    if isinstance(t, RandomTuner):
        return keras_tuner.oracles.RandomSearchOracle(max_trials=spec.max_trials, **common)
    if isinstance(t, HyperbandTuner):
        # Hyperband decides its own number of trials from max_epochs and factor.
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=t.max_epochs or spec.epochs,
            factor=t.factor,
            hyperband_iterations=t.hyperband_iterations,
            **common,
        )
    raise TunerConfigError(f"unknown tuner {t!r}")


class ServiceTuner(compat.TolerantSpace, compat.FitCallbacks, keras_tuner.Tuner):
    """A keras-tuner Tuner whose per-epoch hook feeds extra callbacks (progress, heartbeat).

    ``epoch_hooks`` are called as ``hook(trial, epoch, logs)`` after every epoch; the worker
    uses them for progress reporting. A hook that returns True stops training the trial after
    this epoch (early stopping); the trial still ends as COMPLETED with the epochs it trained.
    With ``backups`` every trial's training state is saved
    each epoch and resumed by whoever runs the trial next (:mod:`tuner_service.checkpoints`); the
    backup is written after the hooks, so a worker fenced by its progress report never
    overwrites the new holder's backup. With a ``handover`` (workers), a stop request (SIGTERM)
    is honoured before asking for a trial, on receiving one, and at the safe points of
    :class:`~tuner_service.handover.StopPoint` during training, after the epoch backup. A ``build``
    that raises while the search space is declared does not stop the process
    (:class:`compat.TolerantSpace`). Everything else is stock keras-tuner.
    """

    def __init__(
        self,
        *args: Any,
        epoch_hooks: Sequence[Callable[[Any, int, dict], bool | None]] = (),
        backups: bool = False,
        handover: Handover | None = None,
        **kwargs: Any,
    ):
        self.epoch_hooks = list(epoch_hooks)
        self.backups = backups
        self.handover = handover
        # Not super(): in ServiceHyperband the next class is keras_tuner.Hyperband, whose
        # __init__ only builds its own oracle; ours is given.
        keras_tuner.Tuner.__init__(self, *args, **kwargs)

    def fit_callbacks(self, trial: Any, execution: int) -> list[Any]:
        callbacks = []
        if self.backups:
            callbacks += checkpoints.fit_callbacks(self.get_trial_dir(trial.trial_id), execution)
        if self.handover is not None:
            callbacks.append(self.handover.stop_point(trial.trial_id))  # after the backup: see StopPoint
        return callbacks

    def pre_create_trial(self) -> None:
        super().pre_create_trial()
        if self.handover is not None:
            self.handover.check(None, "between trials")

    def on_trial_begin(self, trial: Any) -> None:
        if self.handover is not None:
            self.handover.check(trial.trial_id, "as the trial was handed out")  # give it straight back
        super().on_trial_begin(trial)

    def on_trial_end(self, trial: Any) -> None:
        from tuner_service.client import TrialFenced  # gRPC client: workers only

        try:
            super().on_trial_end(trial)  # reports the end to the oracle
        except TrialFenced as err:
            # The chief gave the trial to another worker (our lease ran out): it owns the trial
            # and its backup now. Drop ours and ask for new work.
            log.warning("abandoning trial %s: %s", trial.trial_id, err)
            return
        if self.backups:
            checkpoints.remove(self.get_trial_dir(trial.trial_id))

    def on_epoch_end(self, trial: Any, model: keras.Model, epoch: int, logs: dict | None = None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        stop = [hook(trial, epoch, dict(logs or {})) for hook in self.epoch_hooks]
        if any(stop):
            model.stop_training = True


class ServiceHyperband(ServiceTuner, keras_tuner.Hyperband):
    """Hyperband's trial logic (epoch budgets, warm starts) around an oracle we built."""


def build_tuner(
    spec: StudySpec,
    hypermodel: Any,
    oracle: keras_tuner.Oracle | None = None,
    **kwargs: Any,
) -> ServiceTuner:
    """The study's tuner over ``spec.directory/spec.name`` (resuming whatever is there)."""
    oracle = oracle or build_oracle(spec)
    cls = ServiceHyperband if isinstance(oracle, keras_tuner.oracles.HyperbandOracle) else ServiceTuner
    return cls(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=spec.directory,
        project_name=spec.name,
        executions_per_trial=spec.executions_per_trial,
        overwrite=False,
        **kwargs,
    )
