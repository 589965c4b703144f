"""What the report says, in order, independent of HTML or Markdown: banners, then sections of
facts, tables and figures. Each section is there only when it has something to show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner_service import fmt
from tuner_service.report.load import SearchView, finite
from tuner_service.report.stats import MIN_IMPORTANCE_TRIALS, Importance

MAX_HP_COLUMNS = 10  # beyond this the trials table lists hyperparameters in one column
BEST_MARK = "★"
STOPPED_EARLY = "stopped early"  # a trial's status when the stopping rule ended it (keras-tuner: COMPLETED)
STATE_PHRASE = {
    "running": "is still running",
    "interrupted": "was interrupted",
    "failed": "failed",
    "stopped": "stopped without finishing (its chief is gone)",
}


@dataclass
class Table:
    rows: list[list[str]]
    header: list[str] | None = None  # None: a list of facts (name, value), drawn without a header row
    marked: set[int] = field(default_factory=set)  # rows to highlight (the best trial)


@dataclass
class Section:
    title: str
    table: Table | None = None
    image: str | None = None  # a key of SearchView.images
    notes: list[str] = field(default_factory=list)
    callout: str | None = None  # the one sentence a reader must not miss (the verdict)


@dataclass
class Report:
    title: str
    subtitle: str
    banners: list[str]  # warnings shown above everything (PARTIAL)
    sections: list[Section]


def _is_fraction_metric(metric: str) -> bool:
    return "accuracy" in metric or metric in ("acc", "auc", "precision", "recall")


def _metric(metric: str, value: Any) -> str:
    return fmt.percent(value, 2) if _is_fraction_metric(metric) else fmt.number(value)


def _difference(metric: str, value: Any) -> str:
    if not finite(value):
        return fmt.MISSING
    return fmt.points(value, 2) if _is_fraction_metric(metric) else f"{value:+.4f}"


def build(view: SearchView, importance: Importance | None) -> Report:
    spec = view.spec
    subtitle = " · ".join(
        [
            f"{spec.model} model",
            f"{spec.tuner.type} search",
            f"{spec.objective} ({'higher' if view.maximise else 'lower'} is better)",
            f"{len(view.completed)} of {spec.max_trials} trials completed",
            f"{view.wall_label.split(' (')[0]} {fmt.duration(view.wall_seconds)}",
            view.state,
        ]
    )
    banners = []
    if view.partial:
        banners.append(
            f"PARTIAL: the search {STATE_PHRASE.get(view.state, 'has not finished')}. "
            f"{len(view.completed)} of {spec.max_trials} trials completed; everything below describes "
            "those only."
        )
    verdict = _verdict(view)
    sections = [
        verdict if verdict.table else None,  # first when there is one, else a note further down
        _summary(view),
        _best(view),
        None if verdict.table else verdict,
        Section("Objective per trial and best so far", image="objective")
        if "objective" in view.images
        else Section("Objective per trial", notes=["No trial has completed yet."]),
        _importance(view, importance),
        _parallel(view),
        Section(
            "Each hyperparameter against the objective",
            image="hyperparameters",
            notes=["Numeric values are drawn where they are; categories are spread a little sideways."],
        )
        if "hyperparameters" in view.images
        else None,
        _curves(view),
        _trials(view),
    ]
    return Report(f"Search report: {spec.name}", subtitle, banners, [s for s in sections if s is not None])


def _summary(view: SearchView) -> Section:
    spec = view.spec
    counts: dict[str, int] = {}
    for t in view.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    others = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if s != "COMPLETED")
    trial_seconds = [t.seconds for t in view.trials if t.seconds is not None]
    workers = {t.worker for t in view.trials if t.worker}
    rows = [
        ["state", view.state + (" (partial)" if view.partial else "")],
        ["model", spec.model],
        ["tuner", spec.tuner.type],
        ["objective", f"{spec.objective} ({view.direction})"],
        [
            "trials",
            f"{len(view.completed)} completed of max_trials {spec.max_trials}"
            + (f"; {others}" if others else ""),
        ],
        ["epochs per trial", str(spec.epochs)],
        [view.wall_label, fmt.duration(view.wall_seconds)],
    ]
    if trial_seconds:
        rows.append(
            [
                "training time",
                f"{fmt.duration(sum(trial_seconds))} in {len(trial_seconds)} trials "
                f"(median {fmt.duration(sorted(trial_seconds)[len(trial_seconds) // 2])}) "
                f"on {len(workers) or '?'} worker{'s' if len(workers) != 1 else ''}",
            ]
        )
    if view.stopping is not None:
        stopped = view.stopped_early
        trained = sum(t.epochs or 0 for t in view.trials)
        full = max([spec.epochs, *(t.epochs or 0 for t in view.trials if not t.stopped_early)])
        rows.append(
            [
                "early stopping",
                f"{view.stopping.get('rule')}: {len(stopped)} trials stopped; {trained} epochs trained "
                f"of {full * len(view.trials)} without stopping",
            ]
        )
    else:
        rows.append(["early stopping", "off"])
    return Section("Search", Table(rows))


def _best(view: SearchView) -> Section | None:
    best = view.best
    if best is None:
        return None
    rows = [[k, fmt.value(v)] for k, v in best.hyperparameters.items()]
    return Section(
        f"Best hyperparameters (trial {best.trial_id}, {view.spec.objective} {fmt.number(best.score)})",
        Table(rows, header=["hyperparameter", "value"]),
    )


def _verdict(view: SearchView) -> Section:
    """Baseline vs tuned on the test set, with the uncertainty results.json carries."""
    results, baseline = view.results, view.baseline or {}
    tuned_metrics: dict[str, Any] = dict(results.get("test_metrics") or {})
    base_metrics: dict[str, Any] = dict(results.get("baseline_test_metrics") or {})
    # Older results.json: accuracy only, the baseline's possibly in baseline.json.
    tuned_metrics.setdefault("accuracy", results.get("test_accuracy"))
    base_metrics.setdefault("accuracy", results.get("baseline_test_accuracy", baseline.get("test_accuracy")))
    metrics = [
        m
        for m in dict.fromkeys([*tuned_metrics, *base_metrics])
        if finite(tuned_metrics.get(m)) or finite(base_metrics.get(m))
    ]
    rows = []
    cmp = results.get("comparison") if isinstance(results.get("comparison"), dict) else {}
    for m in sorted(metrics, key=lambda m: (m != "accuracy", m)):
        b, t = base_metrics.get(m), tuned_metrics.get(m)
        diff = t - b if finite(t) and finite(b) else None
        if m == cmp.get("metric") and finite(cmp.get("difference")):
            diff = cmp["difference"]  # the paired test's own number, so table and verdict agree
        rows.append([f"test {m}", _metric(m, b), _metric(m, t), _difference(m, diff)])
    val_b, val_t = baseline.get("val_accuracy"), results.get("best_val_score")
    if finite(val_b) or finite(val_t):
        rows.append(
            [
                f"validation ({view.spec.objective}, what the search chose by)",
                _metric("accuracy", val_b),
                _metric(view.spec.objective, val_t),
                "",
            ]
        )
    seed = (view.experiment or {}).get("seed")
    if seed:
        rows.append(
            [
                "seed article, full data, test accuracy",
                f"{seed['baseline']} %",
                f"{seed['tuned']} %",
                f"{seed['tuned'] - seed['baseline']:+.1f} points",
            ]
        )
    notes = ["The test set is used only after the search has chosen, by validation score."]
    callout = _callout(cmp)
    if not rows:
        notes = [
            "No test numbers: the chief retrains and tests the best trial when the search ends."
            if view.partial
            else "No baseline or test numbers yet: run `tuner-service experiment`, "
            "or a search with baseline and retrain_best on."
        ]
    elif callout is None and metrics:
        notes.append(
            "results.json carries no paired test of the two models, so this difference has no error bar: "
            "on a few hundred test images, a difference of a point or two can be noise."
        )
    table = Table(
        rows, header=["measure", "baseline (hand-built)", "tuned (best trial, retrained)", "difference"]
    )
    return Section("Verdict: baseline vs tuned", table if rows else None, notes=notes, callout=callout)


def _callout(cmp: Any) -> str | None:
    if not isinstance(cmp, dict) or not cmp.get("verdict"):
        return None
    metric = str(cmp.get("metric") or "accuracy")
    verdict = str(cmp["verdict"])
    n = cmp.get("test_size")
    ci = cmp.get("ci95") or [None, None]
    evidence = (
        f"tuned {_metric(metric, cmp.get('tuned'))} vs baseline {_metric(metric, cmp.get('baseline'))}"
        f"{f' on the same {n} test images' if n else ''}: a difference of "
        f"{_difference(metric, cmp.get('difference'))} (95 % CI {_difference(metric, ci[0])} to "
        f"{_difference(metric, ci[1])}"
        + (f"; McNemar p = {cmp['mcnemar_p']:.3g}" if finite(cmp.get("mcnemar_p")) else "")
        + ")"
    )
    if verdict == "within noise":
        return (
            f"Within noise: {evidence}. This test set cannot tell the two models apart; "
            "neither is shown to be better."
        )
    return f"{verdict[0].upper()}{verdict[1:]}: {evidence}."


def _importance(view: SearchView, importance: Importance | None) -> Section:
    if importance is None:
        return Section(
            "Parameter importance",
            notes=[
                f"Needs at least {MIN_IMPORTANCE_TRIALS} completed trials with varied hyperparameters "
                f"({len(view.completed)} so far)."
            ],
        )
    return Section(
        "Parameter importance",
        image="importance" if "importance" in view.images else None,
        notes=[
            f"Random-forest main effects: {importance.method}. With {importance.trials} trials it is a "
            "hint about where the "
            "objective moved, not a measurement."
        ],
    )


def _parallel(view: SearchView) -> Section | None:
    if "parallel" not in view.images:
        return None
    return Section(
        "Parallel coordinates",
        image="parallel",
        notes=[
            "One line per completed trial, coloured by its objective (brighter is better; the best is "
            "thicker). "
            "Axes are ordered by importance when known; 'unused' marks a layer the trial did not have."
        ],
    )


def _curves(view: SearchView) -> Section:
    if "curves" in view.images:
        return Section(f"Learning curves of the top {min(5, len(view.completed))} trials", image="curves")
    return Section(
        "Learning curves",
        notes=[
            "No per-epoch history recorded (the chief keeps one in trial_history.jsonl when its "
            "status API is on, and in early_stopping.json when early stopping is on)."
        ],
    )


def _trials(view: SearchView) -> Section:
    names = sorted({k for t in view.trials for k in t.hyperparameters})
    wide = len(names) <= MAX_HP_COLUMNS
    header = ["trial", "status", view.spec.objective, "epochs", "seconds", "worker"]
    header += names if wide else ["hyperparameters"]
    rows, marked = [], set()
    ordered = view.ranked() + [t for t in view.trials if t not in view.completed]
    for i, t in enumerate(ordered):
        mark = t is view.best
        if mark:
            marked.add(i)
        row = [
            f"{t.trial_id} {BEST_MARK} best" if mark else t.trial_id,
            STOPPED_EARLY if t.stopped_early else t.status,
            fmt.number(t.score),
            str(t.epochs or fmt.MISSING),
            fmt.number(t.seconds, 1),
            t.worker or fmt.MISSING,
        ]
        if wide:
            row += [fmt.value(t.hyperparameters[n]) if n in t.hyperparameters else "" for n in names]
        else:
            row.append(", ".join(f"{k}={fmt.value(v)}" for k, v in t.hyperparameters.items()))
        rows.append(row)
    notes = (
        ["An empty hyperparameter cell: the trial did not use it (a layer beyond its depth)."] if wide else []
    )
    return Section("All trials, best first", Table(rows, header=header, marked=marked), notes=notes)
