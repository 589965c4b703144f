"""k8s/Makefile.k8s acts only on the kind cluster it created: every kubectl / helm command that
reaches a cluster names the kube context (`make -n` shows the exact command lines)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.helpers import REPO, require_tool, run

pytestmark = pytest.mark.k8s

CLUSTER_TARGETS = [
    "kind-up",
    "deploy",
    "undeploy",
    "monitoring",
    "port-forward",
    "logs",
    "status",
    "study-apply",
    "study-delete",
]
# kubectl / helm subcommands that work offline (no cluster): the only ones allowed without a context.
OFFLINE = re.compile(r"\b(kubectl kustomize|helm (repo|lint|template|version))\b")


def make_n(*args: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    proc = run(
        [
            make,
            "--no-print-directory",
            "-n",
            "-f",
            "k8s/Makefile.k8s",
            f"KUBECTL={require_tool('kubectl')}",
            f"HELM={require_tool('helm')}",
            *args,
        ],
        cwd=REPO,
    )
    # One command per line: join the recipe's continuation lines, split pipelines.
    text = proc.stdout.replace("\\\n", " ")
    return [part.strip() for line in text.splitlines() for part in line.split("|") if part.strip()]


def _tool_commands(lines: list[str]) -> list[str]:
    kubectl, helm = require_tool("kubectl"), require_tool("helm")
    out = []
    for line in lines:
        line = line.lstrip("-@ ")
        for path, name in ((kubectl, "kubectl"), (helm, "helm")):
            line = line.replace(path, name)
        if re.search(r"(^|[\s;])(kubectl|helm) ", line) and not line.startswith("echo"):
            out.append(line)
    return out


def test_every_cluster_command_names_the_kind_context():
    commands = _tool_commands(make_n(*CLUSTER_TARGETS, "PURGE=1"))
    assert len(commands) >= 12
    for cmd in commands:
        if OFFLINE.search(cmd):
            assert "--context" not in cmd and "--kube-context" not in cmd, cmd
            continue
        if cmd.startswith("helm"):
            assert cmd.startswith("helm --kube-context kind-tuner-service "), cmd
        else:
            assert cmd.startswith("kubectl --context kind-tuner-service "), cmd


def test_context_follows_the_cluster_name_or_an_explicit_choice():
    for args, context in ((("CLUSTER=other",), "kind-other"), (("KUBE_CONTEXT=gke-prod",), "gke-prod")):
        for cmd in _tool_commands(make_n("deploy", "undeploy", "status", *args)):
            assert f"--context {context} " in cmd or f"--kube-context {context} " in cmd, cmd


def test_undeploy_waits_until_the_release_is_gone():
    [uninstall] = [c for c in _tool_commands(make_n("undeploy")) if " uninstall " in c]
    assert re.search(r" --wait( |$)", uninstall)
    purge = [c for c in _tool_commands(make_n("undeploy", "PURGE=1")) if "delete pvc" in c]
    assert purge and all("--wait" in c for c in purge)


def test_study_targets_apply_the_overlay_in_its_namespace():
    commands = _tool_commands(make_n("study-apply", "study-delete"))
    assert any("create namespace studies --dry-run=client" in c for c in commands)
    assert any(c.endswith("apply -k ./examples/kustomize/mlp-kind") for c in commands)
    assert any("delete -k ./examples/kustomize/mlp-kind" in c and "--wait" in c for c in commands)
    other = _tool_commands(make_n("study-apply", "OVERLAY=examples/kustomize/cnn-a100"))
    assert any(c.endswith("apply -k examples/kustomize/cnn-a100") for c in other)
