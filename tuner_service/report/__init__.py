"""`tuner-service report`: a self-contained HTML report of a search, and its Markdown twin.

Reads only what a search leaves in its storage (``<directory>/<name>/``, see
:mod:`tuner_service.study.files`) and writes:

- ``report.html``: one file, plots embedded as PNG data URIs (mail it, attach it to a ticket);
- ``report.md`` + ``report_files/*.png``: the same content for a Git forge or a wiki.

The parts: :mod:`.load` (the view model from the study files), :mod:`.stats` (robust axis
limits, parameter importance), :mod:`.plots` (matplotlib figures, Agg backend, no display
needed), :mod:`.content` (what is said, in which order), :mod:`.render` (HTML and Markdown).
A search that has not finished (interrupted, failed, still running) is reported as PARTIAL.
Example::

    tuner-service report --config examples/mlp-quick.yaml
"""

from __future__ import annotations

from pathlib import Path

from tuner_service.report.load import ReportError, SearchView, load
from tuner_service.report.stats import Importance
from tuner_service.spec import StudySpec
from tuner_service.study import files

__all__ = ["ReportError", "write_report"]


def _draw(view: SearchView) -> Importance | None:
    """Every figure into ``view.images``; returns the parameter importance, when there is one."""
    from tuner_service.report import plots, stats

    done = view.completed
    importance = stats.importance([t.hyperparameters for t in done], [t.score for t in done])  # type: ignore[misc]
    order = None
    if importance is not None:
        ranked = sorted(importance.shares, key=importance.shares.__getitem__, reverse=True)
        rest = sorted({k for t in done for k in t.hyperparameters} - set(ranked))
        order = ranked + rest
    figures = {
        "objective": plots.plot_objective(view),
        "importance": plots.plot_importance(importance, view.spec.objective),
        "parallel": plots.plot_parallel(view, order),
        "hyperparameters": plots.plot_hyperparameters(view),
        "curves": plots.plot_curves(view),
    }
    view.images.update({name: png for name, png in figures.items() if png is not None})
    return importance


def write_report(spec: StudySpec) -> Path:
    """Write report.html, report.md and report_files/ for the search in ``spec``'s storage."""
    import matplotlib

    matplotlib.use("Agg")
    from tuner_service.report import content, render

    view = load(spec)
    report = content.build(view, _draw(view))
    project = spec.project_dir
    images = project / files.REPORT_FILES
    images.mkdir(exist_ok=True)
    for name, png in view.images.items():
        files.write_text_atomic(images / f"{name}.png", png)
    files.write_text_atomic(project / files.REPORT_MD, render.render_markdown(report))
    files.write_text_atomic(project / files.REPORT_HTML, render.render_html(report, view.images))
    return project / files.REPORT_HTML
