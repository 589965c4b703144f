"""Human-readable tables of results.json."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tuner_service.fmt import number


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    head = Table(
        title=f"study {results['name']} ({results['model']}, {results['tuner']})",
        show_header=False,
        title_justify="left",
    )
    head.add_row("state", str(results.get("state")))
    head.add_row("trials completed", str(results.get("trials_completed")))
    head.add_row(f"best {results.get('objective')}", number(results.get("best_val_score")))
    head.add_row("test accuracy (best, retrained)", number(results.get("test_accuracy")))
    head.add_row("test accuracy (baseline)", number(results.get("baseline_test_accuracy")))
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
            number(row.get("score")),
            row.get("tuner_id") or "-",
            number(row.get("duration"), 1),
        )
    console.print(trials)
