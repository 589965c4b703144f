"""The report's view model: everything it shows, read from the study directory (nothing computed twice).

Sources: keras-tuner's ``trial_*/trial.json`` (hyperparameters, score, final metrics), the chief's
``service_state.json`` (when and where each trial ran, the search's state), ``trial_history.jsonl``
and ``early_stopping.json`` (per-epoch values), and, when present, ``results.json``,
``baseline.json`` and ``experiment.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_service.experiment import active_hyperparameters
from tuner_service.objective import direction_of
from tuner_service.spec import StudySpec
from tuner_service.studies import live_state
from tuner_service.study import files
from tuner_service.study import history as history_file
from tuner_service.study.files import read_json

Curve = list[tuple[int, float]]  # [(epoch, value)]
UNFINISHED = "UNFINISHED"  # the status shown for a trial that was running when the search ended


class ReportError(Exception):
    """There is nothing to report (no search in this storage)."""


@dataclass
class TrialView:
    trial_id: str
    status: str
    score: float | None
    hyperparameters: dict[str, Any]
    curves: dict[str, Curve]  # metric -> curve
    started_at: float | None = None
    ended_at: float | None = None
    stopped_early: bool = False
    epochs: int | None = None  # epochs trained, when the chief saw them reported
    worker: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass
class SearchView:
    spec: StudySpec
    trials: list[TrialView]
    state: str = "unknown"  # finished | failed | interrupted | running | stopped | unknown
    partial: bool = False  # the search did not run to its end: the report shows what completed
    maximise: bool = True
    wall_seconds: float | None = None
    wall_label: str = "wall time"  # what wall_seconds measures (results.json's, or the trials' span)
    results: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None
    stopping: dict[str, Any] | None = None  # early_stopping.json, when early stopping was on
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def completed(self) -> list[TrialView]:
        return [t for t in self.trials if t.status == "COMPLETED" and finite(t.score)]

    def ranked(self) -> list[TrialView]:
        """Completed trials, best first."""
        return sorted(self.completed, key=lambda t: t.score, reverse=self.maximise)  # type: ignore[arg-type, return-value]

    @property
    def best(self) -> TrialView | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    @property
    def stopped_early(self) -> list[TrialView]:
        return [t for t in self.trials if t.stopped_early]

    @property
    def direction(self) -> str:
        return "max" if self.maximise else "min"


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _trial_curves(trial_json: dict[str, Any]) -> dict[str, Curve]:
    """keras-tuner's own record: usually only the final report (one step)."""
    out = {}
    for name, metric in (trial_json.get("metrics", {}).get("metrics") or {}).items():
        points = []
        for obs in metric.get("observations", []):
            values = obs.get("value") or []
            if values:
                points.append((int(obs.get("step", 0)), sum(values) / len(values)))
        out[name] = sorted(points)
    return out


def _history_curves(points: list[dict[str, Any]]) -> dict[str, Curve]:
    """Curves from the chief's trial_history.jsonl points (one per reported epoch)."""
    out: dict[str, Curve] = {}
    for point in sorted(points, key=lambda p: p["step"]):
        for name, value in point["metrics"].items():
            out.setdefault(name, []).append((int(point["step"]), float(value)))
    return out


def _curves(
    spec: StudySpec, raw: dict[str, Any], points: list[dict[str, Any]], stop: dict
) -> dict[str, Curve]:
    if len(points) > 1:
        return _history_curves(points)
    if stop:  # the early-stopping rule's own record of the objective per epoch
        return {spec.objective: sorted((int(k), sum(v) / len(v)) for k, v in stop.items() if v)}
    return _trial_curves(raw)


def _wall_seconds(results: dict[str, Any], ledger: dict[str, Any]) -> tuple[float | None, str]:
    """The search's wall time from results.json, else the span from the first trial's start to
    the last one's end (or the last save, while it runs), with a label that says which."""
    if finite(results.get("wall_seconds")):
        return float(results["wall_seconds"]), "wall time"
    trials = (ledger.get("trials") or {}).values()
    starts = [t["started_at"] for t in trials if finite(t.get("started_at"))]
    ends = [t["ended_at"] for t in trials if finite(t.get("ended_at"))]
    if ledger.get("state") == "running" and finite(ledger.get("updated_at")):
        ends.append(ledger["updated_at"])
    if not starts or not ends:
        return None, "wall time"
    return max(ends) - min(starts), "trials' wall time (first start to last end)"


def _state(project: Path, results: dict[str, Any], ledger: dict[str, Any]) -> tuple[str, bool]:
    """(state, partial): results.json's word when the chief wrote one, else the ledger's (a
    "running" ledger whose chief is gone reads "stopped")."""
    state = str(results.get("state") or live_state(project, ledger.get("state")))
    partial = results.get("partial")
    if not isinstance(partial, bool):  # no state at all (a stock keras-tuner directory): not known to be
        partial = state not in ("finished", "unknown")
    return state, partial


def _trial(spec: StudySpec, raw: dict[str, Any], rec: dict, points: list, stopping: dict | None) -> TrialView:
    tid = str(raw.get("trial_id"))
    stop_history = (stopping or {}).get("history", {}).get(tid, {})
    curves = _curves(spec, raw, points, stop_history)
    hps = {
        k: v
        for k, v in (raw.get("hyperparameters", {}).get("values") or {}).items()
        if not k.startswith("tuner/")
    }
    reported = max((len(c) for c in curves.values()), default=0) if (len(points) > 1 or stop_history) else 0
    epochs = rec.get("epochs") or reported or None
    return TrialView(
        trial_id=tid,
        status=str(raw.get("status")),
        score=raw.get("score"),
        hyperparameters=active_hyperparameters(spec.model, hps),
        curves=curves,
        started_at=rec.get("started_at"),
        ended_at=rec.get("ended_at"),
        stopped_early=tid in (stopping or {}).get("stopped", {}),
        epochs=int(epochs) if epochs else None,
        worker=rec.get("tuner_id"),
    )


def load(spec: StudySpec) -> SearchView:
    """Everything the report shows, from the search's storage."""
    study = files.StudyDir(spec.project_dir)
    paths = study.trial_files()
    if not paths:
        raise ReportError(f"no search found at {study.root} (no trial_*/trial.json; has it run?)")
    ledger = read_json(study.state) or {}
    results = read_json(study.results) or {}
    stopping = read_json(study.early_stopping)
    # Per-epoch values: workers report every epoch to the chief, which keeps them in
    # trial_history.jsonl (when its status API is on); trial.json has keras-tuner's final report.
    histories = history_file.read(study.history)
    records = ledger.get("trials") or {}
    trials = []
    for path in paths:
        raw = read_json(path)
        if raw is None:
            continue
        tid = str(raw.get("trial_id"))
        trials.append(_trial(spec, raw, records.get(tid, {}), histories.get(tid, []), stopping))
    trials.sort(key=lambda t: (t.ended_at or math.inf, _int(t.trial_id)))
    state, partial = _state(study.root, results, ledger)
    if state != "running":  # a trial still "RUNNING" in a search that has ended never finished
        for t in trials:
            if t.status in ("RUNNING", "IDLE"):
                t.status = UNFINISHED
    wall_seconds, wall_label = _wall_seconds(results, ledger)
    return SearchView(
        spec=spec,
        trials=trials,
        state=state,
        partial=partial,
        maximise=direction_of(spec, results) == "max",  # the one rule: tuner_service/objective.py
        wall_seconds=wall_seconds,
        wall_label=wall_label,
        results=results,
        baseline=read_json(study.baseline),
        experiment=read_json(study / files.EXPERIMENT_JSON),
        stopping=stopping,
    )


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0
