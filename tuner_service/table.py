"""Human-readable tables of results.json (and of a search that has not finished)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tuner_service.fmt import number
from tuner_service.significance import sentence


def verdict_line(results: dict[str, Any]) -> str | None:
    """The baseline comparison in one plain line (None without a baseline)."""
    cmp = results.get("comparison")
    if not cmp:
        return None
    unit = (
        "test images"
        if results.get("data_source", "keras:").split(":")[0] in ("keras", "images")
        else ("test samples")
    )
    return sentence(cmp, unit)


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    if results.get("partial"):
        console.print(
            f"PARTIAL ({results.get('state')}): the search has not finished; what has completed so far",
            highlight=False,
            soft_wrap=True,
        )
    title = f"study {results['name']} ({results['model']}, {results['tuner']})"
    head = Table(title=title, show_header=False, title_justify="left")
    head.add_row("state", str(results.get("state")))
    head.add_row("trials completed", str(results.get("trials_completed")))
    if results.get("wall_seconds") is not None:
        head.add_row("wall time", f"{results['wall_seconds']:.0f} s")
    direction = results.get("objective_direction")
    head.add_row(
        f"best {results.get('objective')}" + (f" ({direction})" if direction else ""),
        number(results.get("best_val_score")),
    )
    for metric, value in (results.get("test_metrics") or {}).items():
        head.add_row(f"test {metric} (best, retrained)", number(value))
    if "test_metrics" not in results and "test_accuracy" in results:  # results.json before test_metrics
        head.add_row("test accuracy (best, retrained)", number(results.get("test_accuracy")))
    for metric, value in (results.get("baseline_test_metrics") or {}).items():
        head.add_row(f"test {metric} (baseline)", number(value))
    if "baseline_test_metrics" not in results and "baseline_test_accuracy" in results:
        head.add_row("test accuracy (baseline)", number(results.get("baseline_test_accuracy")))
    for key, value in (results.get("best_hyperparameters") or {}).items():
        if not key.startswith("tuner/"):
            head.add_row(f"  {key}", str(value))
    console.print(head)
    verdict = verdict_line(results)
    if verdict:
        console.print(f"baseline vs tuned: {verdict}", highlight=False, soft_wrap=True)
    trials = Table(title="trials", title_justify="left")
    for col in ("trial", "status", "score", "worker", "seconds"):
        trials.add_column(col)
    for row in results.get("trials", []):
        trials.add_row(
            row["trial_id"],
            str(row["status"]),
            number(row.get("score")),
            row.get("tuner_id") or "-",
            number(row.get("duration"), 1),
        )
    console.print(trials)
