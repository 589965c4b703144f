"""The benchmark harness (``python -m bench --smoke``) runs end to end and reports every figure.

A benchmark is not a test: nothing here asserts a speed. It asserts that both paths -- stock
keras-tuner and tuner-service -- ran every trial, that the load test got every answer, and
that the table was printed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.e2e
def test_bench_smoke_runs_both_paths_and_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| figure | stock | ours | stock/ours | note |" in done.stdout
    raw = json.loads(out.read_text())
    assert {(r["impl"], r["workers"]) for r in raw["e2e"]} == {("stock", 1), ("ours", 1)}
    for run in raw["e2e"]:
        assert run["ok"] and run["trials_run"] == run["trials"], run
    for impl, result in raw["load"].items():
        assert result["errors"] == 0 and result["trials_completed"] == result["clients"] * result["cycles"], (
            impl
        )
