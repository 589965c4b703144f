"""`tuner-service report`: a self-contained HTML report of a search, and its Markdown twin.

Reads only what a search leaves in its storage (``<directory>/<name>/``): keras-tuner's
``trial_*/trial.json`` (hyperparameters, score, per-epoch metrics when workers report them),
the chief's ``service_state.json`` (when each trial ran), and, when present, ``results.json``,
``baseline.json``, ``experiment.json`` and ``early_stopping.json``. Writes:

- ``report.html``: one file, plots embedded as PNG data URIs (mail it, attach it to a ticket);
- ``report.md`` + ``report_files/*.png``: the same content for a Git forge or a wiki.

Plots use matplotlib's Agg backend (no display needed). Example::

    tuner-service report --config examples/mlp-quick.yaml
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner_service.experiment import active_hyperparameters
from tuner_service.objective import direction_of
from tuner_service.spec import StudySpec
from tuner_service.study import files
from tuner_service.study.files import read_json

TOP_CURVES = 5


class ReportError(Exception):
    """There is nothing to report (no search in this storage)."""


@dataclass
class TrialView:
    trial_id: str
    status: str
    score: float | None
    hyperparameters: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]]  # metric -> [(epoch, value)]
    started_at: float | None = None
    ended_at: float | None = None
    stopped_early: bool = False
    per_epoch: bool = False  # the worker reported every epoch (else only keras-tuner's final report)

    @property
    def epochs(self) -> int | None:
        """Epochs trained, known only from per-epoch reports."""
        if not self.per_epoch:
            return None
        return max((len(c) for c in self.curves.values()), default=0)


@dataclass
class SearchView:
    spec: StudySpec
    trials: list[TrialView]
    results: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None
    stopping: dict[str, Any] | None = None
    maximise: bool = True
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def completed(self) -> list[TrialView]:
        return [t for t in self.trials if t.status == "COMPLETED" and _finite(t.score)]

    def ranked(self) -> list[TrialView]:
        return sorted(self.completed, key=lambda t: t.score, reverse=self.maximise)  # type: ignore[arg-type, return-value]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _curves(trial_json: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for name, metric in (trial_json.get("metrics", {}).get("metrics") or {}).items():
        points = []
        for obs in metric.get("observations", []):
            values = obs.get("value") or []
            if values:
                points.append((int(obs.get("step", 0)), sum(values) / len(values)))
        out[name] = sorted(points)
    return out


def _history_curves(points: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Curves from the chief's trial_history.jsonl points (one per reported epoch)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for point in sorted(points, key=lambda p: p["step"]):
        for name, value in point["metrics"].items():
            out.setdefault(name, []).append((int(point["step"]), float(value)))
    return out


def load(spec: StudySpec) -> SearchView:
    """Everything the report shows, from the search's storage."""
    project = spec.project_dir
    paths = files.StudyDir(project).trial_files()
    if not paths:
        raise ReportError(f"no search found at {project} (no trial_*/trial.json; has it run?)")
    ledger = (read_json(project / files.STATE) or {}).get("trials", {})
    stopping = read_json(project / files.EARLY_STOPPING)
    stopped = set((stopping or {}).get("stopped", {}))
    # Per-epoch values: workers report every epoch to the chief, which keeps them in
    # trial_history.jsonl (when its status API is on); trial.json has keras-tuner's final report.
    from tuner_service.study.history import read

    histories = read(project / files.HISTORY)
    trials = []
    for path in paths:
        raw = read_json(path)
        if raw is None:
            continue
        tid = str(raw.get("trial_id"))
        rec = ledger.get(tid, {})
        points = histories.get(tid, [])
        stop_history = (stopping or {}).get("history", {}).get(tid, {})
        if len(points) > 1:
            curves = _history_curves(points)
        elif stop_history:  # the early-stopping rule's own record of the objective per epoch
            curves = {spec.objective: sorted((int(k), sum(v) / len(v)) for k, v in stop_history.items() if v)}
        else:
            curves = _curves(raw)
        trials.append(
            TrialView(
                trial_id=tid,
                status=str(raw.get("status")),
                score=raw.get("score"),
                hyperparameters=active_hyperparameters(
                    spec.model,
                    {
                        k: v
                        for k, v in (raw.get("hyperparameters", {}).get("values") or {}).items()
                        if not k.startswith("tuner/")
                    },
                ),
                curves=curves,
                started_at=rec.get("started_at"),
                ended_at=rec.get("ended_at"),
                stopped_early=tid in stopped,
                # Per-epoch reports (early stopping on) or several steps recorded in the trial.
                per_epoch=tid in (stopping or {}).get("history", {})
                or len(curves.get(spec.objective, [])) > 1,
            )
        )
    trials.sort(key=lambda t: (t.ended_at or math.inf, _int(t.trial_id)))
    return SearchView(
        spec=spec,
        trials=trials,
        results=read_json(project / files.RESULTS),
        baseline=read_json(project / files.BASELINE),
        experiment=read_json(project / files.EXPERIMENT_JSON),
        stopping=stopping,
        maximise=direction_of(spec, read_json(project / files.RESULTS)) == "max",
    )


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


# -- plots ---------------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_objective(view: SearchView) -> bytes:
    """Objective of each trial in the order trials ended, and the best so far."""
    import matplotlib.pyplot as plt

    done = [t for t in view.trials if _finite(t.score)]
    t0 = min((t.started_at for t in view.trials if t.started_at), default=None)
    use_time = t0 is not None and all(t.ended_at for t in done)
    if use_time:
        seconds = [t.ended_at - t0 for t in done]  # type: ignore[operator]
        in_minutes = max(seconds, default=0) > 120
        xs = [s / 60 for s in seconds] if in_minutes else seconds
        xlabel = f"{'minutes' if in_minutes else 'seconds'} since the search started"
    else:
        xs, xlabel = list(range(1, len(done) + 1)), "trials ended"
    ys = [t.score for t in done]
    best, running = [], None
    for y in ys:
        running = y if running is None else (max(running, y) if view.maximise else min(running, y))
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colors = ["tab:orange" if t.stopped_early else "tab:blue" for t in done]
    ax.scatter(xs, ys, c=colors, s=28, zorder=3, label="trial (orange: stopped early)")
    ax.step(xs, best, where="post", color="tab:green", label="best so far")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(view.spec.objective)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if view.maximise else "upper right", fontsize=8)
    return _png(fig)


def plot_curves(view: SearchView) -> bytes | None:
    """The objective per epoch of the top trials (needs per-epoch reports)."""
    import matplotlib.pyplot as plt

    top = [t for t in view.ranked() if len(t.curves.get(view.spec.objective, [])) > 1][:TOP_CURVES]
    if not top:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for t in top:
        points = t.curves[view.spec.objective]
        ax.plot(
            [p[0] + 1 for p in points], [p[1] for p in points], marker="o", ms=3, label=f"trial {t.trial_id}"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(view.spec.objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_hyperparameters(view: SearchView) -> bytes | None:
    """Each hyperparameter against the objective (categorical values jittered a little)."""
    import matplotlib.pyplot as plt
    import numpy as np

    done = view.completed
    names = sorted({k for t in done for k in t.hyperparameters})
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.flat, names, strict=False):
        pairs = [(t.hyperparameters[name], t.score) for t in done if name in t.hyperparameters]
        values = [p[0] for p in pairs]
        if (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            and len(set(values)) > 3
        ):
            ax.scatter(values, [p[1] for p in pairs], s=18)
        else:
            cats = sorted({str(v) for v in values}, key=_natural)
            xs = [cats.index(str(v)) + rng.uniform(-0.12, 0.12) for v in values]
            ax.scatter(xs, [p[1] for p in pairs], s=18)
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.supylabel(view.spec.objective, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


# -- content ---------------------------------------------------------------------------------------
def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f} %" if pct else f"{value:.4f}"
    return str(value)


def sections(view: SearchView) -> list[tuple[str, list[list[str]] | None, str | None, str]]:
    """(title, table rows (first row = header) or None, image name or None, note)."""
    spec, results = view.spec, view.results or {}
    ranked = view.ranked()
    best = ranked[0] if ranked else None
    out: list[tuple[str, list[list[str]] | None, str | None, str]] = []
    summary = [
        ["", ""],
        ["model", spec.model],
        ["tuner", spec.tuner.type],
        ["objective", spec.objective],
        ["trials", f"{len(view.completed)} completed of {len(view.trials)} (max_trials {spec.max_trials})"],
        ["epochs per trial", str(spec.epochs)],
        ["search state", str(results.get("state", "not finalized"))],
    ]
    if view.stopping is not None:
        stopped = view.stopping.get("stopped", {})
        trained = sum(t.epochs or 0 for t in view.trials)
        full = max([spec.epochs, *(t.epochs or 0 for t in view.trials if not t.stopped_early)])
        summary.append(
            [
                "early stopping",
                f"{view.stopping.get('rule')}: {len(stopped)} trials stopped; {trained} epochs trained "
                f"of {full * len(view.trials)} without stopping",
            ]
        )
    out.append(("Search", summary, None, ""))
    if best is not None:
        rows = [["hyperparameter", "value"]] + [[k, str(v)] for k, v in best.hyperparameters.items()]
        out.append(
            (
                f"Best hyperparameters (trial {best.trial_id}, {spec.objective} {_fmt(best.score)})",
                rows,
                None,
                "",
            )
        )
    comparison = [
        ["", "validation", "test"],
        [
            "baseline (hand-built)",
            _fmt((view.baseline or {}).get("val_accuracy"), True),
            _fmt((view.baseline or {}).get("test_accuracy"), True),
        ],
        [
            "tuned (best trial; test after retraining)",
            _fmt(results.get("best_val_score"), True),
            _fmt(results.get("test_accuracy"), True),
        ],
    ]
    seed = (view.experiment or {}).get("seed")
    if seed:
        comparison.append(
            ["seed article, full data: baseline → tuned", "", f"{seed['baseline']} % → {seed['tuned']} %"]
        )
    note = "The test set is used only after the search has chosen, by validation score."
    if not view.baseline and not results.get("test_accuracy"):
        note = (
            "No baseline or test numbers yet: run `tuner-service experiment`, "
            "or a search with baseline and retrain_best on."
        )
    out.append(("Baseline comparison", comparison, None, note))
    out.append(("Objective per trial and best so far", None, "objective", ""))
    curve_note = (
        ""
        if "curves" in view.images
        else (
            "No per-epoch history recorded (the chief keeps one in trial_history.jsonl when its "
            "status API is on, and in early_stopping.json when early stopping is on)."
        )
    )
    out.append(
        (
            f"Learning curves of the top {TOP_CURVES} trials",
            None,
            "curves" if "curves" in view.images else None,
            curve_note,
        )
    )
    out.append(
        (
            "Each hyperparameter against the objective",
            None,
            "hyperparameters" if "hyperparameters" in view.images else None,
            "",
        )
    )
    trials = [["trial", "status", spec.objective, "epochs", "stopped early", "hyperparameters"]]
    for t in view.ranked() + [t for t in view.trials if t not in view.completed]:
        hps = ", ".join(f"{k}={v}" for k, v in t.hyperparameters.items())
        trials.append(
            [t.trial_id, t.status, _fmt(t.score), str(t.epochs or "-"), "yes" if t.stopped_early else "", hps]
        )
    out.append(("All trials, best first", trials, None, ""))
    return out


def render_html(view: SearchView, parts: list) -> str:
    esc = html.escape
    body = [f"<h1>Search report: {esc(view.spec.name)}</h1>"]
    for title, rows, image, note in parts:
        body.append(f"<h2>{esc(title)}</h2>")
        if rows:
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
            for row in rest:
                body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
            body.append("</table>")
        if image:
            data = base64.b64encode(view.images[image]).decode()
            body.append(f'<img alt="{esc(title)}" src="data:image/png;base64,{data}">')
        if note:
            body.append(f"<p><em>{esc(note)}</em></p>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left;font-size:.9em}th{background:#f3f3f3}img{max-width:100%}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(view.spec.name)} report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def render_markdown(view: SearchView, parts: list) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"# Search report: {view.spec.name}", ""]
    for title, rows, image, note in parts:
        lines += [f"## {title}", ""]
        if rows:
            head, *rest = rows
            lines.append("| " + " | ".join(cell(h) for h in head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rest]
            lines.append("")
        if image:
            lines += [f"![{title}]({files.REPORT_FILES}/{image}.png)", ""]
        if note:
            lines += [f"*{note}*", ""]
    return "\n".join(lines)


def write_report(spec: StudySpec) -> Path:
    """Write report.html, report.md and report_files/ for the search in ``spec``'s storage."""
    import matplotlib

    matplotlib.use("Agg")
    view = load(spec)
    for name, plot in (
        ("objective", plot_objective),
        ("curves", plot_curves),
        ("hyperparameters", plot_hyperparameters),
    ):
        png = plot(view)
        if png is not None:
            view.images[name] = png
    parts = sections(view)
    project = spec.project_dir
    images = project / files.REPORT_FILES
    images.mkdir(exist_ok=True)
    for name, png in view.images.items():
        files.write_text_atomic(images / f"{name}.png", png)
    files.write_text_atomic(project / files.REPORT_MD, render_markdown(view, parts))
    files.write_text_atomic(project / files.REPORT_HTML, render_html(view, parts))
    return project / files.REPORT_HTML
