"""Shared fixtures: the real Fashion-MNIST sample (read-only) and tiny study files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_KERAS_HOME = REPO.parent / "shared" / "data" / "keras"
# Module-scoped fixtures start chiefs before the autouse fixture below runs, and a chief loads the
# study's data before it serves: give every process the sample unless KERAS_HOME says otherwise.
if SHARED_KERAS_HOME.is_dir():
    os.environ.setdefault("KERAS_HOME", str(SHARED_KERAS_HOME))


def pytest_configure(config: pytest.Config) -> None:
    # Without pytest-timeout the `timeout` setting and marks are silently ignored and a hung
    # end-to-end test hangs the whole run: refuse to start instead.
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def keras_home() -> Path:
    if not (SHARED_KERAS_HOME / "datasets" / "fashion-mnist").is_dir():
        pytest.skip(f"Fashion-MNIST sample not found at {SHARED_KERAS_HOME}")
    return SHARED_KERAS_HOME


@pytest.fixture(autouse=True)
def _keras_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keras reads KERAS_HOME at import time; subprocesses get it from their env.
    if SHARED_KERAS_HOME.is_dir():
        monkeypatch.setenv("KERAS_HOME", str(SHARED_KERAS_HOME))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # as the CLI sets it (quiet.py)


def tiny_study(tmp_path: Path, **overrides: Any) -> Path:
    """A study file for a search that takes seconds: few trials, one epoch, small data."""
    study: dict[str, Any] = {
        "name": "tiny",
        "model": "mlp",
        "tuner": {"type": "random"},
        "max_trials": 2,
        "epochs": 1,
        "batch_size": 64,
        "seed": 1,
        "directory": str(tmp_path / "studies"),
        "data": {"max_train_samples": 400},
        "metrics_port": 0,
        "status_port": 0,
        "baseline": False,
        "retrain_best": False,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}
        else:
            study[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tuner_service ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "tuner_service", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
    )
