"""Live progress of a local search: trials done / max, best so far, elapsed time and an ETA, and
what each process does (a worker whose process has exited is shown stopped, whatever the chief
last heard from it)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tuner_service import fmt
from tuner_service.spec import StudySpec

ENDED = ("COMPLETED", "FAILED", "INVALID", "STOPPED")


def eta_seconds(snap: dict[str, Any], workers: int, now: float) -> float | None:
    """Seconds until the last trial ends, if trials keep taking what they took so far.

    The work left is the trials not yet ended, each at the median duration of the ended ones,
    less what the running ones have already trained; ``workers`` share it. None until a trial
    has ended (nothing to go by) or without a trial budget.
    """
    budget = snap.get("max_trials")
    trials = list((snap.get("trials") or {}).values())
    durations = [t["duration"] for t in trials if t.get("status") in ENDED and t.get("duration") is not None]
    if not budget or not durations:
        return None
    typical = statistics.median(durations)
    ended = sum(1 for t in trials if t.get("status") in ENDED)
    running = [t for t in trials if t.get("status") == "RUNNING" and t.get("started_at")]
    left = max(0, budget - ended) * typical - sum(min(now - t["started_at"], typical) for t in running)
    return max(0.0, left) / max(1, workers)


def process_state(name: str, snap: dict[str, Any], returncode: int | None) -> str:
    """What the table says a process is doing: the ledger's word while the process lives."""
    if name == "chief":
        state = snap.get("state", "starting")
        return state if returncode is None or state != "running" else "stopped"
    recorded = (snap.get("workers") or {}).get(name, {}).get("state", "starting")
    if returncode is None:
        return recorded
    return "done" if recorded == "done" else "stopped"


class Progress:
    """Renders the chief's ledger snapshot; a live table on a terminal, else a line on change."""

    def __init__(self, spec: StudySpec, enabled: bool = True, clock: Callable[[], float] = time.time):
        self.spec = spec
        self.clock = clock
        self.console = Console(stderr=True)
        self.live_mode = enabled and self.console.is_terminal
        self._live: Live | None = None
        self._last_line = ""
        self.started = clock()

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
            f"best {self.spec.objective} {fmt.number(snap.get('best_score'))}"
        )

    def timing(self, snap: dict[str, Any], workers: int) -> str:
        """'elapsed 3 min 05 s, ETA ~2 min 40 s' (no ETA once the search has ended)."""
        now = self.clock()
        line = f"elapsed {fmt.duration(now - self.started)}"
        if snap.get("state") == "running":
            eta = eta_seconds(snap, workers, now)
            line += f", ETA ~{fmt.duration(eta)}" if eta is not None else ", ETA after the first trial"
        return line

    def table(self, snap: dict[str, Any], procs: list[Any]) -> Group:
        table = Table()
        for col in ("process", "state", "trial", "completed", "exit"):
            table.add_column(col)
        workers = snap.get("workers", {})
        alive = 0
        for proc in procs:
            w = workers.get(proc.name, {})
            state = process_state(proc.name, snap, proc.returncode)
            alive += proc.name != "chief" and proc.returncode is None
            table.add_row(
                proc.name,
                state,
                (w.get("trial_id") or "-") if state == "training" else "-",
                str(w.get("trials_completed", "-")),
                "-" if proc.returncode is None else str(proc.returncode),
            )
        return Group(Text(self.summary(snap)), Text(self.timing(snap, alive)), table)

    def update(self, snap: dict[str, Any] | None, procs: list[Any]) -> None:
        if snap is None:
            return
        if self._live is not None:
            self._live.update(self.table(snap, procs))
            return
        line = self.summary(snap)
        if line != self._last_line:  # a line per change of the counts, with the time it took
            workers = sum(1 for p in procs if p.name != "chief" and p.returncode is None)
            print(f"{line}; {self.timing(snap, workers)}", file=sys.stderr, flush=True)
            self._last_line = line
