"""Shared helpers of the Kubernetes packaging tests (select them with `pytest -m k8s`).

The tools come from scripts/install-k8s-tools.sh (.tools/bin, .tools/venv/bin) or PATH, or
from $HELM / $KUBERNETES_VALIDATE / $CHECKOV. A test whose tool is missing is skipped with the
reason locally, and fails under CI (``CI`` set), which installs them (scripts/ci-k8s.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "tuner-service"
PRESETS = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
RELEASE = "test"
NAMESPACE = "studies"
#: Oldest and newest Kubernetes minor versions the chart supports (Chart.yaml kubeVersion).
K8S_VERSIONS = ("1.31.0", "1.35.0")

_ENV_NAMES = {
    "helm": "HELM",
    "kubectl": "KUBECTL",
    "kubernetes-validate": "KUBERNETES_VALIDATE",
    "checkov": "CHECKOV",
    "hadolint": "HADOLINT",
}
_INSTALL_HINT = "run scripts/install-k8s-tools.sh (CI: scripts/ci-k8s.sh)"


def find_tool(name: str) -> str | None:
    """Path of a tool: $HELM etc., then .tools/bin, .tools/venv/bin, then PATH."""
    env = os.environ.get(_ENV_NAMES.get(name, ""), "")
    if env:
        return env
    for folder in (ROOT / ".tools" / "bin", ROOT / ".tools" / "venv" / "bin"):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which(name)


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        message = f"{name} not installed: {_INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs every tool: a missing one is a broken CI, not a skip
        pytest.skip(message)
    return path


def tool_env() -> dict[str, str]:
    """Environment for the tools: offline, no user config or plugins."""
    env = dict(os.environ)
    env.update(
        BC_SKIP_MAPPING="TRUE",
        CHECKOV_SKIP_DOWNLOAD="TRUE",
        HELM_NO_PLUGINS="1",
    )
    return env


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env(), timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@cache
def _helm_template(args: tuple[str, ...]) -> str:
    helm = require_tool("helm")
    return run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args]).stdout


def render_text(*args: str) -> str:
    """`helm template test k8s/tuner-service -n studies ARGS` (cached per argument list)."""
    return _helm_template(tuple(args))


def render(*args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(*args)) if d]


def preset_args(preset: str) -> tuple[str, ...]:
    return ("--values", str(PRESETS[preset]))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def job(docs: list[dict], component: str) -> dict:
    [j] = [
        d for d in by_kind(docs, "Job") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return j


@pytest.fixture
def chart_render():
    return render
