"""Generated files stay in sync with their sources: the status API code and the dashboard JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.helpers import DASHBOARD, REPO


def tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_status_code_matches_the_proto(tmp_path: Path) -> None:
    # In a subprocess, as `make proto` runs it: protoc's own protobuf must not meet the one
    # already loaded here (that crashes the interpreter).
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_proto.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    committed = REPO / "tuner_service" / "status" / "_generated"
    for name in ("status_pb2.py", "status_pb2.pyi", "status_pb2_grpc.py"):
        assert (committed / name).read_text() == (tmp_path / name).read_text(), (
            f"{name} is stale: run `make proto`"
        )


def test_dashboard_json_matches_its_generator() -> None:
    assert DASHBOARD.read_text() == tool("dashboard").render(), (
        "dashboard.json is stale: run `make dashboard`"
    )


def test_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["study"]["multi"] and "tuner_service_" in variables["study"]["definition"]
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        for target in panel.get("targets", []):
            assert 'study=~"$study"' in target["expr"], (panel["title"], target["expr"])
    titles = {p["title"] for p in board["panels"]}
    for wanted in (
        "Progress",
        "ETA",
        "Trial throughput (per hour)",
        "Running trials per worker",
        "Best objective over time",
        "Trial duration distribution",
        "Failures and reassignments",
        "Chief RPC latency",
        "Worker throughput (samples/s)",
    ):
        assert wanted in titles
