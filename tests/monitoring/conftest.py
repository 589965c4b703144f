"""Helpers for the monitoring tests: the Prometheus tools, scrapes, and metric names in use."""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "k8s" / "tuner-service" / "files"
DASHBOARD = FILES / "dashboard.json"
ALERTS = FILES / "alerts.yaml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
METRIC_NAME = re.compile(r"\b(tuner_service_[a-z_]+)\b")


def require_tool(name: str) -> str:
    """The tool's path; skipped locally when missing, a failure in CI (scripts/ci-monitoring.sh)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (bash scripts/ci-monitoring.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_names(text: str) -> set[str]:
    """Every ``tuner_service_*`` name in a PromQL text (bucket/count/sum suffixes kept)."""
    return set(METRIC_NAME.findall(text))
