"""Live progress of a local search: trials done / max, best so far, what each worker does."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tuner_service.fmt import number
from tuner_service.spec import StudySpec


class Progress:
    """Renders the chief's ledger snapshot; a live table on a terminal, else a line on change."""

    def __init__(self, spec: StudySpec, enabled: bool = True):
        self.spec = spec
        self.console = Console(stderr=True)
        self.live_mode = enabled and self.console.is_terminal
        self._live: Live | None = None
        self._last_line = ""

    def __enter__(self) -> Progress:
        if self.live_mode:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def summary(self, snap: dict[str, Any]) -> str:
        counts = snap.get("counts", {})
        done = counts.get("COMPLETED", 0)
        total = snap.get("max_trials") or "?"
        return (
            f"{snap.get('state')}: trials {done}/{total} completed, "
            f"{counts.get('RUNNING', 0)} running, {counts.get('FAILED', 0)} failed; "
            f"best {self.spec.objective} {number(snap.get('best_score'))}"
        )

    def table(self, snap: dict[str, Any], procs: list[Any]) -> Group:
        table = Table()
        for col in ("process", "state", "trial", "completed", "exit"):
            table.add_column(col)
        workers = snap.get("workers", {})
        for proc in procs:
            w = workers.get(proc.name, {})
            state = snap.get("state", "starting") if proc.name == "chief" else w.get("state", "starting")
            table.add_row(
                proc.name,
                state,
                w.get("trial_id") or "-",
                str(w.get("trials_completed", "-")),
                "-" if proc.returncode is None else str(proc.returncode),
            )
        return Group(Text(self.summary(snap)), table)

    def update(self, snap: dict[str, Any] | None, procs: list[Any]) -> None:
        if snap is None:
            return
        if self._live is not None:
            self._live.update(self.table(snap, procs))
            return
        line = self.summary(snap)
        if line != self._last_line:
            print(line, file=sys.stderr, flush=True)
            self._last_line = line
