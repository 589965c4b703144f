"""k8s/manifests/ (for `kubectl apply -f` without Helm) equals a fresh `make manifests`, and
validates on the supported Kubernetes versions."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from .conftest import K8S_VERSIONS, ROOT, require_tool, run

pytestmark = pytest.mark.k8s

MANIFESTS = ROOT / "k8s" / "manifests"


def test_manifests_in_sync_with_chart(tmp_path):
    helm = require_tool("helm")
    proc = subprocess.run(
        [str(ROOT / "k8s" / "render-manifests.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HELM": helm},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = sorted(p.name for p in tmp_path.glob("*.yaml"))
    committed = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
    assert fresh == committed
    for name in fresh:
        assert (tmp_path / name).read_text() == (MANIFESTS / name).read_text(), (
            f"k8s/manifests/{name} is stale: run `make manifests` and commit the result"
        )


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
