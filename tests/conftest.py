"""Shared fixtures and hooks: the real Fashion-MNIST sample (read-only), a quiet TensorFlow.

Helpers (study builder, `cli`, `wait_for`, paths) are in tests/helpers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED_KERAS_HOME

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
