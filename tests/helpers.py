"""The one home of the tests' helpers, imported one way everywhere: ``from tests.helpers import ...``.

conftest.py files hold only fixtures and hooks; test hypermodels live in ``tests/fixtures/``
(a study names them as ``model: tests.fixtures.<module>:<attr>``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tuner_service.ports import free_port as free_port  # re-exported: every helper from here

T = TypeVar("T")

# -- paths ----------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
SHARED_KERAS_HOME = REPO.parent / "shared" / "data" / "keras"
CHART = REPO / "k8s" / "tuner-service"
PRESETS = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
DASHBOARD = CHART / "files" / "dashboard.json"
ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = REPO / "tests" / "monitoring" / "alerts_test.yaml"


# -- studies --------------------------------------------------------------------------------------
def study_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The tests' one study: a search that takes seconds (few trials, one epoch, small data).

    ``overrides`` replace top-level keys; a dict merges into a dict section (``data={...}``).
    """
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
    return study


def tiny_study(tmp_path: Path, **overrides: Any) -> Path:
    """``study_dict`` written as ``tmp_path/study.yaml``."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict(tmp_path, **overrides)))
    return path


# -- processes and waits --------------------------------------------------------------------------
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


def as_in_a_terminal(argv: list[str]) -> list[str]:
    """``argv`` started with SIGINT at its default, as a command typed in a terminal is.

    A test that presses Ctrl-C (sends SIGINT) must not depend on how pytest itself was started:
    a shell starts background jobs (``cmd &``, CI wrappers, nohup) with SIGINT *ignored*, children
    inherit that, and Python then never installs its KeyboardInterrupt handler. The child resets
    SIGINT and execs ``argv``; a disposition reset to default survives exec.
    """
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", reset, *argv]


def wait_for(
    condition: Callable[[], T],
    what: str,
    timeout: float,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``condition`` until it returns a true value (returned), for at most ``timeout`` seconds.

    ``check`` runs before each poll and may raise to end the wait early (e.g. a process died).
    Fails the test naming ``what`` it waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# -- external tools (helm, checkov, prometheus...) ------------------------------------------------
_TOOL_ENV_NAMES = {
    "helm": "HELM",
    "kubectl": "KUBECTL",
    "kubernetes-validate": "KUBERNETES_VALIDATE",
    "checkov": "CHECKOV",
    "hadolint": "HADOLINT",
}
_INSTALL_HINTS = {
    "prometheus": "bash scripts/ci-monitoring.sh installs it",
    "promtool": "bash scripts/ci-monitoring.sh installs it",
}
_K8S_INSTALL_HINT = "run scripts/install-k8s-tools.sh (CI: scripts/ci-k8s.sh)"


def find_tool(name: str) -> str | None:
    """Path of a tool: $HELM etc., then .tools/bin, .tools/venv/bin, then PATH."""
    env = os.environ.get(_TOOL_ENV_NAMES.get(name, ""), "")
    if env:
        return env
    for folder in (REPO / ".tools" / "bin", REPO / ".tools" / "venv" / "bin"):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The tool's path; skipped with the reason locally when missing, a failure under CI (``CI``
    set), which installs every tool (scripts/ci-k8s.sh, scripts/ci-monitoring.sh)."""
    path = find_tool(name)
    if path is None:
        message = f"{name} not installed: {_INSTALL_HINTS.get(name, _K8S_INSTALL_HINT)}"
        if os.environ.get("CI"):
            pytest.fail(message)  # a missing tool under CI is a broken CI, not a skip
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


def run(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env(), timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


# -- the Helm chart -------------------------------------------------------------------------------
RELEASE = "test"
NAMESPACE = "studies"
#: Oldest and newest Kubernetes minor versions the chart supports (Chart.yaml kubeVersion).
K8S_VERSIONS = ("1.31.0", "1.35.0")


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


# -- monitoring -----------------------------------------------------------------------------------
METRIC_NAME = re.compile(r"\b(tuner_service_[a-z_]+)\b")


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def metric_names(text: str) -> set[str]:
    """Every ``tuner_service_*`` name in a PromQL text (bucket/count/sum suffixes kept)."""
    return set(METRIC_NAME.findall(text))
