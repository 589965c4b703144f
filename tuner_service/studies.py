"""`tuner-service list [DIR]`: every study under a directory, with its state, progress and best.

A study directory is ``DIR/<name>/`` holding the chief's ``service_state.json`` (or at least
keras-tuner's ``oracle.json``). The state is the ledger's (running, finished, failed,
interrupted), except that a ledger that still says "running" is believed only while the chief's
process (its pid in ``endpoints.json``) is alive on this machine: a chief killed with SIGKILL,
or a machine that rebooted, leaves "running" behind, and that study is listed as "stopped".
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuner_service import fmt
from tuner_service.study import endpoints, files
from tuner_service.study.files import read_json
from tuner_service.study.ledger import read_snapshot


@dataclass
class StudyRow:
    name: str
    path: str
    state: str  # running | finished | failed | interrupted | stopped | unknown
    completed: int
    max_trials: int | None
    best: float | None
    objective: str | None
    updated_at: float | None  # unix seconds of the last save

    @property
    def progress(self) -> str:
        return f"{self.completed}/{self.max_trials or '?'}"


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def live_state(project_dir: Path, saved_state: str | None) -> str:
    """The study's state, with a "running" that no live chief backs turned into "stopped".

    On a cluster the chief runs on another machine, whose pids mean nothing here: a chief that
    recorded another host name is taken at its word.
    """
    state = saved_state or "unknown"
    if state != "running":
        return state
    chief = endpoints.read(project_dir)
    host = chief.get("hostname")
    if host and host != socket.gethostname():
        return state
    return state if pid_alive(chief.get("pid")) else "stopped"


def _updated_at(project_dir: Path, snapshot: dict[str, Any] | None) -> float | None:
    if snapshot and isinstance(snapshot.get("updated_at"), (int, float)):
        return float(snapshot["updated_at"])
    try:
        return (project_dir / files.ORACLE).stat().st_mtime
    except OSError:
        return None


def row(project_dir: Path) -> StudyRow | None:
    """The study in ``project_dir``, or None when it holds no study."""
    study = files.StudyDir(project_dir)
    snapshot = read_snapshot(project_dir)
    if snapshot is None and not study.oracle.exists():
        return None
    results = read_json(study.results) or {}
    snap = snapshot or {}
    counts = snap.get("counts") or {}
    completed = counts.get("COMPLETED", results.get("trials_completed", 0))
    best = snap.get("best_score", results.get("best_val_score"))
    return StudyRow(
        name=str(snap.get("name") or project_dir.name),
        path=str(project_dir),
        state=live_state(project_dir, snap.get("state") or results.get("state")),
        completed=int(completed or 0),
        max_trials=snap.get("max_trials"),
        best=best if isinstance(best, (int, float)) else None,
        objective=results.get("objective"),
        updated_at=_updated_at(project_dir, snapshot),
    )


def scan(root: Path) -> list[StudyRow]:
    """Every study directly under ``root``, most recently updated first."""
    rows = [r for d in sorted(root.iterdir()) if d.is_dir() and (r := row(d)) is not None]
    return sorted(rows, key=lambda r: -(r.updated_at or 0))


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return fmt.MISSING
    same_day = time.localtime(then)[:3] == time.localtime(now)[:3]
    stamp = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", time.localtime(then))
    return f"{stamp} ({fmt.age(max(0.0, now - then))} ago)"


def main(root: Path, *, as_json: bool) -> int:
    """Print the studies under ``root``; exit 2 when ``root`` is not a directory."""
    from tuner_service.process import UsageError

    if not root.is_dir():
        raise UsageError(f"{root}: no such directory (the studies' `directory`, default: runs)")
    rows = scan(root)
    if as_json:
        print(json.dumps([{**asdict(r), "progress": r.progress} for r in rows], indent=2))
        return 0
    if not rows:
        print(f"no studies under {root}")
        return 0
    from rich.console import Console
    from rich.table import Table

    now = time.time()
    table = Table(title=f"studies under {root}", title_justify="left")
    for col in ("study", "state", "trials", "best", "last update"):
        table.add_column(col)
    for r in rows:
        best = fmt.number(r.best) + (f" ({r.objective})" if r.objective and r.best is not None else "")
        table.add_row(r.name, r.state, r.progress, best, _ago(r.updated_at, now))
    Console().print(table)
    return 0
