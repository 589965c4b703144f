"""Worker side of early stopping: report every epoch to the chief, stop when it says so.

:class:`EpochReporter` is a :class:`~tuner_service.tuners.ServiceTuner` epoch hook. After each
epoch it sends the epoch's metrics through keras-tuner's own ``UpdateTrial`` call (``step`` =
the 0-based epoch), marked as a per-epoch report, and returns True when the chief answers with
the trial's status STOPPED; the tuner then sets ``model.stop_training = True``. The trial ends
normally (COMPLETED) with the epochs it trained.

Side effect, by keras-tuner's design: once a trial's objective has been reported, keras-tuner
does not send its own end-of-trial report again; the oracle scores the trial from the per-epoch
history (the best epoch), which is the same score the end-of-trial report would have given.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from keras_tuner.engine.trial import TrialStatus

log = logging.getLogger(__name__)


class EpochReporter:
    """``hook(trial, epoch, logs) -> bool``: report the epoch; True means "stop this trial"."""

    def __init__(self, oracle: Any, objective: str):
        self.oracle = oracle  # a ServiceOracleClient (update_trial(..., per_epoch=True))
        self.objective = objective
        self.stopped: dict[str, int] = {}  # trial_id -> epochs trained (this worker's view)

    def __call__(self, trial: Any, epoch: int, logs: dict[str, Any]) -> bool:
        metrics = _numeric(logs)
        if self.objective not in metrics:
            return False  # the chief would reject a report without the objective
        answer = self.oracle.update_trial(trial.trial_id, metrics, step=epoch, per_epoch=True)
        if answer.status != TrialStatus.STOPPED:
            return False
        if trial.trial_id not in self.stopped:
            self.stopped[trial.trial_id] = epoch + 1
            log.info("trial %s: stopped early by the chief after %d epochs", trial.trial_id, epoch + 1)
        return True


def _numeric(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out
