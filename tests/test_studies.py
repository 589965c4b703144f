"""`tuner-service list [DIR]`: the studies under a directory, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, cli
from tuner_service.study import files


def _study(
    root: Path, name: str, state: str, completed: int, best: float | None, *, pid: int | None = None
) -> Path:
    project = root / name
    project.mkdir(parents=True)
    snapshot = {
        "name": name,
        "state": state,
        "max_trials": 10,
        "best_score": best,
        "counts": {"COMPLETED": completed, "RUNNING": 1} if state == "running" else {"COMPLETED": completed},
        "updated_at": 1_700_000_000.0 + completed,
        "trials": {},
        "workers": {},
    }
    files.write_json_atomic(project / files.STATE, snapshot)
    if pid is not None:
        endpoints = {"pid": pid, "hostname": socket.gethostname(), "host": "127.0.0.1"}
        files.write_json_atomic(project / files.ENDPOINTS, endpoints)
    return project


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_list_shows_each_study_with_its_state_progress_and_best(tmp_path: Path):
    root = tmp_path / "runs"
    finished = _study(root, "done", "finished", 10, 0.8123)
    files.write_json_atomic(finished / files.RESULTS, {"objective": "val_accuracy", "state": "finished"})
    _study(root, "crashed", "running", 4, 0.71, pid=_dead_pid())  # chief SIGKILLed: ledger still "running"
    _study(root, "live", "running", 2, 0.65, pid=os.getpid())  # a chief that is alive (this process)
    _study(root, "stopped-by-ctrl-c", "interrupted", 6, 0.7)
    (root / "not-a-study").mkdir()  # no ledger, no oracle.json: not listed

    proc = cli("list", str(root), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"done", "crashed", "live", "stopped-by-ctrl-c"}
    assert {n: r["state"] for n, r in rows.items()} == {
        "done": "finished",
        "crashed": "stopped",
        "live": "running",
        "stopped-by-ctrl-c": "interrupted",
    }
    assert rows["done"]["progress"] == "10/10" and rows["done"]["best"] == 0.8123
    assert rows["crashed"]["progress"] == "4/10"
    assert [r["name"] for r in json.loads(proc.stdout)][0] == "done"  # most recently updated first

    table = cli("list", str(root), timeout=60, env={"COLUMNS": "160"})
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if " done " in x)
    assert "finished" in line and "10/10" in line and "0.8123 (val_accuracy)" in line
    assert "stopped" in next(x for x in table.stdout.splitlines() if " crashed " in x)


def test_list_defaults_to_runs_and_says_when_there_is_nothing(tmp_path: Path):
    here = {"PYTHONPATH": str(REPO)}  # run from another directory, this checkout's code
    proc = cli("list", timeout=60, cwd=tmp_path, env=here)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "tuner-service list: runs: no such directory (the studies' `directory`, default: runs)"
    )
    (tmp_path / "runs").mkdir()
    proc = cli("list", timeout=60, cwd=tmp_path, env=here)
    assert proc.returncode == 0 and "no studies under runs" in proc.stdout
