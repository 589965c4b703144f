"""Human-readable tables of results.json."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    head = Table(
        title=f"study {results['name']} ({results['model']}, {results['tuner']})",
        show_header=False,
        title_justify="left",
    )
    head.add_row("state", str(results.get("state")))
    head.add_row("trials completed", str(results.get("trials_completed")))
    head.add_row(f"best {results.get('objective')}", _num(results.get("best_val_score")))
    head.add_row("test accuracy (best, retrained)", _num(results.get("test_accuracy")))
    head.add_row("test accuracy (baseline)", _num(results.get("baseline_test_accuracy")))
    for key, value in (results.get("best_hyperparameters") or {}).items():
        if not key.startswith("tuner/"):
            head.add_row(f"  {key}", str(value))
    console.print(head)
    trials = Table(title="trials", title_justify="left")
    for col in ("trial", "status", "score", "worker", "seconds"):
        trials.add_column(col)
    for row in results.get("trials", []):
        trials.add_row(
            row["trial_id"],
            row["status"],
            _num(row.get("score")),
            row.get("tuner_id") or "-",
            _num(row.get("duration"), 1),
        )
    console.print(trials)
