"""Early stopping, decided by the chief from the per-epoch reports of all trials.

keras-tuner leaves early stopping in distributed searches as a TODO (``Oracle.update_trial``:
"To signal early stopping, set Trial.status to STOPPED"). Here the chief does it:

1. Our workers report each epoch through ``UpdateTrial`` (``step`` = epoch, 0-based), marked as
   progress (``tuner-service-report: progress``, :mod:`tuner_service.wire`): the same report
   is the heartbeat of the worker's lease (:mod:`tuner_service.chief.leases`).
2. The servicer asks :class:`EarlyStopping` whether the trial should stop; if so, the
   ``UpdateTrial`` answer carries ``status=STOPPED`` (only the answer: the oracle's own trial
   stays RUNNING).
3. The worker (``Worker._report``) sets ``model.stop_training = True``; the trial then ends
   **normally, as COMPLETED**, with the epochs it trained: keras-tuner's own end-of-trial report
   scores it by its best epoch among those, so the oracle (random, Bayesian...) learns from it
   like from any other trial.

Rules are small strategies behind :class:`StoppingRule` (like Optuna's pruners); adding one
touches this file only. A stock keras-tuner worker sends only its end-of-trial report, which is
not a progress report, so none of its trials is ever stopped, and the chief stays wire-compatible.

Example::

    >>> stop = EarlyStopping(MedianRule(min_epochs=1, min_trials=1), direction="max")
    >>> for epoch, acc in enumerate([0.5, 0.7, 0.8]):
    ...     _ = stop.report("00", epoch, acc)
    >>> stop.trial_ended("00")
    >>> stop.report("01", 0, 0.2)
    True
"""

from __future__ import annotations

import bisect
import math
import statistics
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner_service.study import files

if TYPE_CHECKING:
    from tuner_service.spec import StudySpec


# A trial's objective per epoch, oriented so that larger is better: curve[s] is the value
# reported for epoch s (NaN if that epoch was never reported).
Curve = Sequence[float]


def best_so_far(curve: Curve) -> float:
    values = [v for v in curve if not math.isnan(v)]
    return max(values) if values else -math.inf


class Peers(ABC):
    """What a rule may compare a trial with, kept up to date as reports arrive.

    :class:`EarlyStopping` maintains each view incrementally, so asking costs the same with 10
    or 10,000 ended trials (each report used to rebuild every trial's curve).
    """

    @abstractmethod
    def ended_running_averages(self, step: int) -> Sequence[float]:
        """Sorted running averages up to ``step`` of the ended trials that reached it."""

    @abstractmethod
    def values_at(self, step: int) -> Sequence[float]:
        """Sorted values at ``step`` of every trial that reported it (the asking one included)."""


class StoppingRule(ABC):
    """Decides, at one epoch of one trial, whether that trial should stop.

    ``curve`` is the trial's objective per epoch so far (its last value is this epoch's),
    ``peers`` the other trials as cached aggregates (:class:`Peers`): the running averages of
    the trials that have ended (completed, stopped early or failed; rules compare against them)
    and every trial's value per epoch (ended or still running; used by asynchronous rules such
    as successive halving). All oriented so that larger is better.
    """

    min_epochs: int = 1

    @abstractmethod
    def should_stop(self, curve: Curve, peers: Peers) -> bool: ...

    def describe(self) -> str:
        return type(self).__name__


def _median_of_sorted(values: Sequence[float]) -> float:
    m = len(values)
    return values[m // 2] if m % 2 else (values[m // 2 - 1] + values[m // 2]) / 2.0


def running_average(curve: Curve, step: int) -> float:
    """Mean of the values reported at epochs 0..step (NaN if none was)."""
    values = [v for v in curve[: step + 1] if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


@dataclass(frozen=True)
class MedianRule(StoppingRule):
    """Median stopping rule as Google Vizier defines it (Golovin et al., KDD 2017, 3.2.2).

    After ``min_epochs`` epochs, stop a trial whose best objective so far is worse than the
    median of the *running averages* up to this epoch of the ended trials that reached it
    (trials stopped early included: they ended too). Never stops before ``min_trials`` such
    trials exist.

    Why this formulation and not Optuna's ``MedianPruner`` (the ended trials' values *at* this
    epoch, stopped trials left out), which we used first: on the Fashion-MNIST sample it stopped
    the trial that would have been best in 3 of 12 random searches. Values at one epoch are noisy
    on a small validation set, and leaving stopped trials out makes the reference pool better and
    better as the weak trials are stopped, until good slow starters fall below its median. The
    running average of all ended trials lost nothing on those searches (docs/results.md).
    """

    min_epochs: int = 1
    min_trials: int = 3

    def should_stop(self, curve: Curve, peers: Peers) -> bool:
        step = len(curve) - 1
        if len(curve) < self.min_epochs:
            return False
        averages = peers.ended_running_averages(step)
        if len(averages) < self.min_trials:
            return False
        return best_so_far(curve) < _median_of_sorted(averages)

    def describe(self) -> str:
        return f"median (min_epochs={self.min_epochs}, min_trials={self.min_trials})"


@dataclass(frozen=True)
class HalvingRule(StoppingRule):
    """Asynchronous successive halving (ASHA; Optuna's ``SuccessiveHalvingPruner``).

    Rungs sit at ``min_epochs * reduction_factor**k`` epochs. A trial reaching a rung goes on
    only if its best-so-far is in the top ``1/reduction_factor`` of all values recorded at that
    rung (by any trial, itself included); with fewer than ``reduction_factor`` values recorded,
    only the best one goes on. ``min_trials`` values must exist at a rung before it stops anyone.
    """

    min_epochs: int = 3
    reduction_factor: int = 3
    min_trials: int = 3

    def _is_rung(self, epochs: int) -> bool:
        if epochs < self.min_epochs:
            return False
        k = math.log(epochs / self.min_epochs, self.reduction_factor)
        return abs(k - round(k)) < 1e-9

    def should_stop(self, curve: Curve, peers: Peers) -> bool:
        epochs = len(curve)
        if not self._is_rung(epochs):
            return False
        step = epochs - 1
        mine = curve[step]
        if math.isnan(mine):
            return False
        values = peers.values_at(step)  # ascending, this trial's value included
        if len(values) < self.min_trials:
            return False
        keep = max(1, len(values) // self.reduction_factor)
        return mine < values[-keep]

    def describe(self) -> str:
        return (
            f"successive halving (min_epochs={self.min_epochs}, "
            f"reduction_factor={self.reduction_factor}, min_trials={self.min_trials})"
        )


RULES: dict[str, type[StoppingRule]] = {"median": MedianRule, "halving": HalvingRule}


def make_rule(name: str, **settings: Any) -> StoppingRule:
    """A rule by its study-file name, e.g. ``make_rule("median", min_epochs=2)``."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ValueError(f"unknown early-stopping rule {name!r} (known: {', '.join(RULES)})") from None
    return cls(**settings)


class _SortedBags:
    """Per-step sorted lists of floats, each value tagged by the trial that put it there."""

    def __init__(self) -> None:
        self._by_step: dict[int, list[float]] = {}
        self._owned: dict[str, dict[int, float]] = {}  # trial_id -> {step: value}

    def get(self, step: int) -> list[float]:
        return self._by_step.get(step, [])

    def put(self, trial_id: str, step: int, value: float) -> None:
        self.drop_one(trial_id, step)
        if math.isnan(value):
            return
        bisect.insort(self._by_step.setdefault(step, []), value)
        self._owned.setdefault(trial_id, {})[step] = value

    def drop_one(self, trial_id: str, step: int) -> None:
        old = self._owned.get(trial_id, {}).pop(step, None)
        if old is not None:
            bag = self._by_step[step]
            del bag[bisect.bisect_left(bag, old)]

    def drop(self, trial_id: str) -> None:
        for step in list(self._owned.get(trial_id, {})):
            self.drop_one(trial_id, step)
        self._owned.pop(trial_id, None)


class EarlyStopping(Peers):
    """Per-epoch objective histories of all trials, and the rule's decisions over them.

    Thread-safe: the chief's servicer calls it from its gRPC thread pool. ``get_state`` /
    ``set_state`` round-trip through JSON (``early_stopping.json`` beside ``oracle.json``) so a
    restarted chief keeps both the histories and the list of trials it stopped.

    A report costs O(epochs) plus a sorted insert, whatever the number of ended trials: each
    trial's curve is cached, the ended trials' running averages and every trial's value per
    epoch are kept in sorted lists per epoch (the :class:`Peers` the rules read).
    """

    def __init__(self, rule: StoppingRule, direction: str = "max", max_epochs: int | None = None):
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', not {direction!r}")
        self.rule = rule
        self.direction = direction
        # A trial at its last epoch has nothing left to save: never "stop" it there.
        self.max_epochs = max_epochs
        self._sign = 1.0 if direction == "max" else -1.0
        # trial_id -> {step: [values]} (several values per step when executions_per_trial > 1).
        self._history: dict[str, dict[int, list[float]]] = {}
        self._ended: set[str] = set()
        self.stopped: dict[str, int] = {}  # trial_id -> epochs trained when stopped
        self._lock = threading.Lock()
        self._curves: dict[str, list[float]] = {}  # trial_id -> _curve(trial_id), cached
        self._values = _SortedBags()  # every trial's curve value per step
        self._averages = _SortedBags()  # ended trials' running averages per step

    # -- inputs --------------------------------------------------------------------------
    def report(self, trial_id: str, step: int, value: float) -> bool:
        """Record ``value`` of the objective at epoch ``step``; return whether to stop the trial."""
        with self._lock:
            if trial_id in self.stopped:
                return True  # a late or repeated report of a trial already told to stop
            if not math.isfinite(value):
                return False
            self._history.setdefault(trial_id, {}).setdefault(int(step), []).append(float(value))
            curve = self._update_curve(trial_id, int(step))
            if trial_id in self._ended:
                self._index_ended(trial_id)  # a late report changes a reference's averages
                return False
            if self.max_epochs is not None and len(curve) >= self.max_epochs:
                return False
            if self.rule.should_stop(curve, self):
                self.stopped[trial_id] = len(curve)
                return True
            return False

    def trial_ended(self, trial_id: str) -> None:
        """The trial ended (completed, early-stopped or failed): it is now a reference curve."""
        with self._lock:
            if trial_id in self._history:
                self._ended.add(trial_id)
                self._index_ended(trial_id)

    def forget(self, trial_id: str) -> None:
        """Drop a trial's history (e.g. it failed and will be retried from scratch)."""
        with self._lock:
            self._history.pop(trial_id, None)
            self._ended.discard(trial_id)
            self.stopped.pop(trial_id, None)
            self._curves.pop(trial_id, None)
            self._values.drop(trial_id)
            self._averages.drop(trial_id)

    # -- the caches (under self._lock) ---------------------------------------------------
    def _update_curve(self, trial_id: str, step: int) -> list[float]:
        curve = self._curves.setdefault(trial_id, [])
        if len(curve) <= step:
            curve.extend([math.nan] * (step + 1 - len(curve)))
        curve[step] = self._sign * statistics.fmean(self._history[trial_id][step])
        self._values.put(trial_id, step, curve[step])
        return curve

    def _index_ended(self, trial_id: str) -> None:
        curve = self._curves.get(trial_id, [])
        self._averages.drop(trial_id)
        for step in range(len(curve)):
            self._averages.put(trial_id, step, running_average(curve, step))

    def _rebuild(self) -> None:
        self._curves, self._values, self._averages = {}, _SortedBags(), _SortedBags()
        for trial_id, steps in self._history.items():
            for step in sorted(steps):
                self._update_curve(trial_id, step)
        for trial_id in self._ended:
            self._index_ended(trial_id)

    # -- Peers (read by the rule, under self._lock) ---------------------------------------
    def ended_running_averages(self, step: int) -> Sequence[float]:
        return self._averages.get(step)

    def values_at(self, step: int) -> Sequence[float]:
        return self._values.get(step)

    # -- views ---------------------------------------------------------------------------

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rule": self.rule.describe(),
                "direction": self.direction,
                "history": {t: {str(s): v for s, v in h.items()} for t, h in self._history.items()},
                "ended": sorted(self._ended),
                "stopped": dict(self.stopped),
            }

    def set_state(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self._history = {
                t: {int(s): [float(x) for x in v] for s, v in h.items()}
                for t, h in state.get("history", {}).items()
            }
            self._ended = set(state.get("ended", []))
            self.stopped = {t: int(n) for t, n in state.get("stopped", {}).items()}
            self._rebuild()

    def save(self, project_dir: Path) -> None:
        files.write_json_atomic(Path(project_dir) / files.EARLY_STOPPING, self.get_state())

    def restore(self, project_dir: Path) -> bool:
        state = files.read_json(Path(project_dir) / files.EARLY_STOPPING)
        if not isinstance(state, dict):
            return False
        self.set_state(state)
        return True


def study_rule(spec: StudySpec) -> StoppingRule | None:
    """The rule the study file asks for, the rule's own defaults filled in (None when off)."""
    es = spec.early_stopping
    return None if es is None else make_rule(es.rule, **es.rule_settings())


def build_early_stopping(spec: StudySpec, direction: str) -> EarlyStopping | None:
    """The study's early stopping, or None when ``early_stopping`` is off (the default)."""
    rule = study_rule(spec)
    return None if rule is None else EarlyStopping(rule, direction, max_epochs=spec.epochs)


def read_state(project_dir: Path) -> dict[str, Any] | None:
    """The saved early-stopping state of a search (for reports), or None when it was off."""
    return files.read_json(Path(project_dir) / files.EARLY_STOPPING)
