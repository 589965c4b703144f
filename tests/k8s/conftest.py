"""Fixtures of the Kubernetes packaging tests (select them with `pytest -m k8s`).

Their helpers (tool lookup, `helm template`) are in tests/helpers.py. The tools come from
scripts/install-k8s-tools.sh (.tools/bin, .tools/venv/bin) or PATH, or from $HELM /
$KUBERNETES_VALIDATE / $CHECKOV. A test whose tool is missing is skipped with the reason
locally, and fails under CI (``CI`` set), which installs them (scripts/ci-k8s.sh).
"""

from __future__ import annotations

import pytest

from tests.helpers import render


@pytest.fixture
def chart_render():
    return render
