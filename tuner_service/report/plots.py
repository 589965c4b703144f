"""The report's figures (matplotlib, Agg backend), each a PNG, or None when there is nothing to draw.

Every objective axis uses :func:`stats.robust_limits` over the completed trials: a trial far
outside the rest (a diverged run) is drawn clipped at the edge as a triangle with its value
written beside it, instead of stretching the axis for everyone.
"""

from __future__ import annotations

import io
from typing import Any

from tuner_service import fmt
from tuner_service.report import stats
from tuner_service.report.load import SearchView

TOP_CURVES = 5
MAX_WRITTEN = 4  # clipped points whose values are written beside them; beyond, one summary line
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
BLUE, ORANGE, GREEN, GREY = "tab:blue", "tab:orange", "tab:green", "0.45"
BEST_STYLE = {
    "marker": "*",
    "s": 150,
    "color": "gold",
    "edgecolor": "black",
    "linewidth": 0.7,
    "zorder": 5,
    "clip_on": False,  # the best sits at the top (or bottom) edge by definition
}


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def objective_limits(view: SearchView) -> stats.Limits:
    return stats.robust_limits([t.score for t in view.completed])  # type: ignore[misc]


def _scatter_clipped(
    ax: Any,
    xs: list[float],
    ys: list[float],
    limits: stats.Limits,
    colors: list[str] | None = None,
    write: bool = True,
    **style: Any,
) -> bool:
    """Points inside the limits as given; the rest at the edge as a red triangle, with its value
    written beside it when ``write`` (staggered, so neighbours do not overprint). True when
    something was clipped."""
    inside = [i for i, y in enumerate(ys) if limits.lo <= y <= limits.hi]
    outside = [(x, y) for x, y in zip(xs, ys, strict=True) if not limits.lo <= y <= limits.hi]
    if inside:
        c = [colors[i] for i in inside] if colors else None
        ax.scatter([xs[i] for i in inside], [ys[i] for i in inside], c=c, **style)
    for k, (x, y) in enumerate(sorted(outside)):
        below = y < limits.lo
        edge = limits.lo if below else limits.hi
        ax.scatter([x], [edge], marker="v" if below else "^", color="tab:red", s=44, zorder=4, clip_on=False)
        if write and len(outside) <= MAX_WRITTEN:
            lift = 5 + 9 * (k % 2)
            ax.annotate(
                fmt.number(y, 3),
                (x, edge),
                xytext=(5, lift if below else -6 - lift),
                textcoords="offset points",
                fontsize=7,
                color="tab:red",
            )
    if write and len(outside) > MAX_WRITTEN:  # too many to write each: say how many, and how far
        low = [y for _, y in outside if y < limits.lo]
        high = [y for _, y in outside if y > limits.hi]
        words = [f"{len(low)} below (lowest {fmt.number(min(low), 3)})"] if low else []
        words += [f"{len(high)} above (highest {fmt.number(max(high), 3)})"] if high else []
        ax.text(
            0.01,
            0.02,
            "off the axis: " + ", ".join(words),
            transform=ax.transAxes,
            fontsize=7,
            color="tab:red",
            bbox=LABEL_BOX,
            zorder=6,
        )
    ax.set_ylim(limits.lo, limits.hi)
    return bool(outside)


STOPPED_EARLY, CLIPPED = "trial stopped early", "off the axis (drawn at the edge)"


def objective_legend(view: SearchView) -> list[str]:
    """The objective plot's legend: only entries that something in the plot stands for (no
    "stopped early" when early stopping was off or stopped nothing, no clipping mark when
    nothing was clipped)."""
    labels = ["trial"]
    if any(t.stopped_early for t in view.completed):
        labels.append(STOPPED_EARLY)
    labels.append("best so far")
    if objective_limits(view).outliers:
        labels.append(CLIPPED)
    if view.best is not None:
        labels.append("best")
    return labels


def _legend_handle(label: str) -> Any:
    from matplotlib.lines import Line2D

    styles: dict[str, dict[str, Any]] = {
        "trial": {"marker": "o", "color": BLUE, "ls": ""},
        STOPPED_EARLY: {"marker": "o", "color": ORANGE, "ls": ""},
        "best so far": {"color": GREEN},
        CLIPPED: {"marker": "v", "color": "tab:red", "ls": ""},
        "best": {"marker": "*", "color": "gold", "markeredgecolor": "black", "ls": "", "ms": 11},
    }
    return Line2D([], [], label=label, **styles[label])


def plot_objective(view: SearchView) -> bytes | None:
    """Objective of each trial in the order trials ended, and the best so far."""
    import matplotlib.pyplot as plt

    done = view.completed
    if not done:
        return None
    t0 = min((t.started_at for t in view.trials if t.started_at), default=None)
    if t0 is not None and all(t.ended_at for t in done):
        seconds = [t.ended_at - t0 for t in done]  # type: ignore[operator]
        in_minutes = max(seconds, default=0) > 120
        xs = [s / 60 for s in seconds] if in_minutes else seconds
        xlabel = f"{'minutes' if in_minutes else 'seconds'} since the first trial started"
    else:
        xs, xlabel = list(range(1, len(done) + 1)), "trials completed"
    ys: list[float] = [t.score for t in done]  # type: ignore[misc]
    best, running = [], None
    for y in ys:
        running = y if running is None else (max(running, y) if view.maximise else min(running, y))
        best.append(running)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.step(xs, best, where="post", color=GREEN, lw=1.6, zorder=2)
    colors = [ORANGE if t.stopped_early else BLUE for t in done]
    _scatter_clipped(ax, xs, ys, objective_limits(view), colors, s=30 if len(done) <= 100 else 12, zorder=3)
    if view.best is not None:
        i = done.index(view.best)
        ax.scatter([xs[i]], [ys[i]], **BEST_STYLE)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(view.spec.objective)
    ax.grid(alpha=0.3)
    handles = [_legend_handle(label) for label in objective_legend(view)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def plot_curves(view: SearchView) -> bytes | None:
    """The objective per epoch of the top trials (needs per-epoch reports)."""
    import matplotlib.pyplot as plt

    objective = view.spec.objective
    top = [t for t in view.ranked() if len(t.curves.get(objective, [])) > 1][:TOP_CURVES]
    if not top:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.4))
    values = []
    for t in top:
        points = t.curves[objective]
        values += [p[1] for p in points]
        ax.plot(
            [p[0] + 1 for p in points], [p[1] for p in points], marker="o", ms=3, label=f"trial {t.trial_id}"
        )
    limits = stats.robust_limits(values)
    ax.set_ylim(limits.lo, limits.hi)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def _names(view: SearchView) -> list[str]:
    return sorted({k for t in view.completed for k in t.hyperparameters})


def plot_hyperparameters(view: SearchView) -> bytes | None:
    """Each hyperparameter against the objective. Numbers sit at their value (log axis when they
    span decades); categories are spread a little sideways so equal points do not hide."""
    import math

    import matplotlib.pyplot as plt
    import numpy as np

    done = view.completed
    names = _names(view)
    if not names:
        return None
    limits = objective_limits(view)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    clipped = False
    for ax, name in zip(axes.flat, names, strict=False):
        used = [t for t in done if name in t.hyperparameters]
        axis = stats.axis_for(name, [t.hyperparameters[name] for t in used])
        xs = [
            float(t.hyperparameters[name]) if axis.numeric else axis.position(t.hyperparameters[name])
            for t in used
        ]
        if not axis.numeric:  # jitter categories only: a category's position carries no value
            xs = [x + rng.uniform(-0.15, 0.15) for x in xs]
            ax.set_xticks(range(len(axis.categories)), axis.categories)
            ax.set_xlim(-0.5, len(axis.categories) - 0.5)
        else:
            if axis.log:
                ax.set_xscale("log")
            distinct = sorted({float(t.hyperparameters[name]) for t in used})
            if len(distinct) <= 6:
                ax.set_xticks(
                    distinct, [fmt.value(v) if not float(v).is_integer() else str(int(v)) for v in distinct]
                )
                ax.minorticks_off()
        ys = [t.score for t in used]
        clipped |= _scatter_clipped(ax, xs, ys, limits, write=False, s=20, alpha=0.7, color=BLUE, zorder=3)  # type: ignore[arg-type]
        if view.best in used:
            i = used.index(view.best)  # type: ignore[arg-type]
            ax.scatter([xs[i]], [ys[i]], **{**BEST_STYLE, "s": 110})
        ax.margins(x=0.12)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.supylabel(view.spec.objective, fontsize=9)
    fig.tight_layout()
    if clipped:
        fig.text(
            0.01,
            -0.01,
            "red triangles: trials off the axis (their values are in the objective plot)",
            fontsize=7,
            color="tab:red",
            va="top",
        )
    return _png(fig)


def plot_importance(importance: stats.Importance | None, objective: str) -> bytes | None:
    """Horizontal bars, most important on top."""
    import matplotlib.pyplot as plt

    if importance is None:
        return None
    items = sorted(importance.shares.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(items) + 0.9))
    ax.barh([k for k, _ in items], [v for _, v in items], color=BLUE)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {fmt.percent(v, 0)}", va="center", fontsize=8)
    ax.set_xlim(0, max(v for _, v in items) * 1.18)
    ax.set_xlabel(f"share of the explained variation of {objective} ({importance.trials} trials)")
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_parallel(view: SearchView, order: list[str] | None = None) -> bytes | None:
    """Parallel coordinates: one vertical axis per hyperparameter, then the objective; one line
    per completed trial, coloured by its objective (best on top, thicker)."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colormaps, colors

    done = sorted(view.completed, key=lambda t: t.score, reverse=not view.maximise)  # type: ignore[arg-type, return-value]
    names = order or _names(view)
    if len(done) < 2 or not names:
        return None
    limits = objective_limits(view)
    norm = colors.Normalize(limits.lo, limits.hi)
    cmap = colormaps["viridis"] if view.maximise else colormaps["viridis_r"]  # bright = good
    fig, ax = plt.subplots(figsize=(max(6.0, 1.15 * (len(names) + 1)), 3.8))
    unused_y = -0.12  # where a trial that does not use a hyperparameter crosses its axis
    ys_by_axis = []
    for k, name in enumerate(names):
        used = [t.hyperparameters[name] for t in done if name in t.hyperparameters]
        axis = stats.axis_for(name, used)
        positions = [axis.position(v) for v in used]
        lo, hi = min(positions), max(positions)
        span = (hi - lo) or 1.0
        ys_by_axis.append(
            [
                (axis.position(t.hyperparameters[name]) - lo) / span
                if name in t.hyperparameters
                else unused_y
                for t in done
            ]
        )
        if axis.numeric:
            distinct = sorted(set(positions))
            shown = distinct if len(distinct) <= 6 else [lo, hi]  # label what was tried, when few
            ticks = [((p - lo) / span, _tick(p, axis.log)) for p in shown]
        else:
            ticks = [((i - lo) / span, c) for i, c in enumerate(axis.categories)]
        if len(used) < len(done):
            ticks.append((unused_y, "unused"))
        for y, label in ticks:
            ax.text(k - 0.05, y, label, ha="right", va="center", fontsize=7, bbox=LABEL_BOX, zorder=4)
    ys_by_axis.append([(limits.clip(t.score) - limits.lo) / (limits.hi - limits.lo) for t in done])  # type: ignore[arg-type]
    for y, v in ((0.0, limits.lo), (1.0, limits.hi)):
        ax.text(len(names) + 0.05, y, fmt.number(v, 3), ha="left", va="center", fontsize=7, bbox=LABEL_BOX)
    xs = list(range(len(names) + 1))
    for i, t in enumerate(done):
        is_best = t is view.best
        ax.plot(
            xs,
            [ys[i] for ys in ys_by_axis],
            color=cmap(norm(limits.clip(t.score))),  # type: ignore[arg-type]
            lw=2.6 if is_best else 1.2,
            alpha=1.0 if is_best else (0.75 if len(done) <= 50 else 0.3),
            zorder=3 if is_best else 2,
        )
    for x in xs:
        ax.axvline(x, color=GREY, lw=0.8, zorder=1)
    ax.set_xticks(xs, [*names, view.spec.objective], fontsize=8, rotation=20)
    ax.set_yticks([])
    ax.set_ylim(-0.2, 1.05)
    ax.set_xlim(-0.7, len(names) + 0.45)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(view.spec.objective, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return _png(fig)


def _tick(position: float, log: bool) -> str:
    value = 10**position if log else position
    return f"{value:.3g}"
