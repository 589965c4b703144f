"""k8s/manifests/ (for `kubectl apply -f` without Helm) and the generated parts of
k8s/kustomize/ (the base, components/fix-permissions) equal a fresh `make manifests`; the plain
manifests validate on the supported Kubernetes versions."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.helpers import K8S_VERSIONS, REPO, require_tool, run

pytestmark = pytest.mark.k8s

MANIFESTS = REPO / "k8s" / "manifests"
KUSTOMIZE = REPO / "k8s" / "kustomize"
KUSTOMIZE_BASE = KUSTOMIZE / "base"


def test_manifests_in_sync_with_chart(tmp_path):
    helm = require_tool("helm")
    out, base = tmp_path / "manifests", tmp_path / "kustomize" / "base"
    proc = subprocess.run(
        [str(REPO / "k8s" / "render-manifests.sh"), str(out), str(base)],
        capture_output=True,
        text=True,
        env={**os.environ, "HELM": helm},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = sorted(p.name for p in out.glob("*.yaml"))
    committed = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
    assert fresh == committed
    for name in fresh:
        assert (out / name).read_text() == (MANIFESTS / name).read_text(), (
            f"k8s/manifests/{name} is stale: run `make manifests` and commit the result"
        )
    # The kustomize base and the generated component, file by file.
    generated = sorted(
        p.relative_to(tmp_path / "kustomize") for p in (tmp_path / "kustomize").rglob("*.yaml")
    )
    assert {str(p) for p in generated} == {
        "base/kustomization.yaml",
        "base/tuner-service.yaml",
        "components/fix-permissions/kustomization.yaml",
    }
    assert {p.name for p in KUSTOMIZE_BASE.iterdir()} == {"kustomization.yaml", "tuner-service.yaml"}
    for rel in generated:
        assert (tmp_path / "kustomize" / rel).read_text() == (KUSTOMIZE / rel).read_text(), (
            f"k8s/kustomize/{rel} is stale: run `make manifests` and commit the result"
        )


def test_side_loaded_cpu_manifest_does_not_pull():
    """The CPU manifest is kind's, whose image `make kind-load` side-loads: no registry has it."""
    for path, policy in (("tuner-service-cpu.yaml", "IfNotPresent"), ("tuner-service.yaml", "Always")):
        docs = [d for d in yaml.safe_load_all((MANIFESTS / path).read_text()) if d]
        pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Job"]
        assert len(pods) == 2
        assert {c["imagePullPolicy"] for p in pods for c in p["containers"]} == {policy}, path


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate(version):
    validate = require_tool("kubernetes-validate")
    files = [str(p) for p in sorted(MANIFESTS.glob("*.yaml"))]
    proc = run([validate, "--strict", "--quiet", "-k", version, *files], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifests_are_self_contained():
    for path in MANIFESTS.glob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs[0]["kind"] == "Namespace"
        ns = docs[0]["metadata"]["name"]
        assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert all(d["metadata"].get("namespace") == ns for d in docs[1:])
        assert "Secret" not in {d["kind"] for d in docs}  # nothing random, nothing secret
