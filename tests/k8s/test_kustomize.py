"""`kubectl apply -k` per study: the example overlays in examples/kustomize/ build with
`kubectl kustomize` on the base generated from the chart (k8s/kustomize/), validate strictly on
the supported Kubernetes versions, pass checkov, carry their own study file, and several studies
share a namespace without a name or selector collision."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import K8S_VERSIONS, REPO, by_kind, job, render, require_tool, run

pytestmark = pytest.mark.k8s

EXAMPLES = REPO / "examples" / "kustomize"
OVERLAYS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "kustomization.yaml").is_file())
CHECKOV_CONFIG = REPO / "k8s" / "checkov.yaml"


def build(overlay: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(build_text(overlay)) if d]


def build_text(overlay: Path) -> str:
    kubectl = require_tool("kubectl")
    return run([kubectl, "kustomize", str(overlay)]).stdout


def study_name(overlay: Path) -> str:
    """The study's name in an overlay: its namePrefix without the trailing dash."""
    return yaml.safe_load((overlay / "kustomization.yaml").read_text())["namePrefix"].rstrip("-")


def copy_tree(tmp_path: Path) -> Path:
    """The repository's kustomize parts at their relative places (kustomize refuses absolute
    paths to a base), to build overlays made by a test next to the examples."""
    shutil.copytree(REPO / "k8s" / "kustomize", tmp_path / "k8s" / "kustomize")
    shutil.copytree(EXAMPLES, tmp_path / "examples" / "kustomize")
    return tmp_path / "examples" / "kustomize"


def renamed_copy(examples: Path, source: str, name: str) -> Path:
    """What docs/kubernetes.md tells a user to do: copy an example, change the study's name."""
    target = examples / name
    shutil.copytree(examples / source, target)
    path = target / "kustomization.yaml"
    text = path.read_text()
    text = text.replace(f"namePrefix: {source}-", f"namePrefix: {name}-")
    text = text.replace(f"app.kubernetes.io/instance: {source}", f"app.kubernetes.io/instance: {name}")
    path.write_text(text)
    study = target / "study.yaml"
    study.write_text(re.sub(r"(?m)^name: .*$", f"name: {name}", study.read_text()))
    return target


def test_examples_exist():
    assert {"cnn-a100", "mlp-kind"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay, version, tmp_path):
    validate = require_tool("kubernetes-validate")
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(build_text(EXAMPLES / overlay))
    proc = run([validate, "--strict", "--quiet", "-k", version, str(manifest)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Couldn't find schema" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_the_overlays_study(overlay):
    from tuner_service import spec as spec_module

    path = EXAMPLES / overlay
    docs = build(path)
    [cm] = by_kind(docs, "ConfigMap")
    assert cm["data"]["study.yaml"] == (path / "study.yaml").read_text()
    # Generated, hence named by content: a changed study.yaml is a new name, which the Jobs'
    # immutable pod templates refuse, instead of reaching running Jobs' new pods.
    assert re.fullmatch(rf"{study_name(path)}-tuner-service-study-[a-z0-9]{{10}}", cm["metadata"]["name"])
    for j in by_kind(docs, "Job"):
        vols = {v["name"]: v for v in j["spec"]["template"]["spec"]["volumes"]}
        assert vols["study"]["configMap"]["name"] == cm["metadata"]["name"]
    # The study is valid for our entrypoints, and it writes to the shared volume.
    study = spec_module.load(path / "study.yaml")
    [worker] = [j for j in by_kind(docs, "Job") if j["metadata"]["name"].endswith("-worker")]
    [container] = worker["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert study.directory.startswith(mounts["data"] + "/")
    assert (study.status_port, study.metrics_port) == (8001, 9090)  # the base's Service ports


def _names(docs):
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


def _labels_match(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_studies_share_a_namespace_without_collisions(tmp_path):
    examples = copy_tree(tmp_path)
    third = renamed_copy(examples, "mlp-kind", "mlp-wide")
    studies = {name: build(examples / name) for name in OVERLAYS} | {"mlp-wide": build(third)}
    namespaces = {d["metadata"].get("namespace") for docs in studies.values() for d in docs}
    assert namespaces == {"studies"}  # one namespace for all
    seen: set = set()
    for name, docs in studies.items():
        names = _names(docs)
        assert not names & seen, f"{name} collides: {names & seen}"
        seen |= names
        for d in docs:
            assert d["metadata"]["name"].startswith(f"{name}-tuner-service-"), d["metadata"]["name"]
            assert len(d["metadata"]["name"]) <= 63
            assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    # Every selector selects its own study's pods and never another study's.
    pods = {
        (study, j["metadata"]["name"]): j["spec"]["template"]["metadata"]["labels"]
        for study, docs in studies.items()
        for j in by_kind(docs, "Job")
    }
    for study, docs in studies.items():
        [svc] = by_kind(docs, "Service")
        matched = {key for key, labels in pods.items() if _labels_match(svc["spec"]["selector"], labels)}
        assert matched == {(study, f"{study}-tuner-service-chief")}
        for policy in by_kind(docs, "NetworkPolicy"):
            selector = policy["spec"]["podSelector"]["matchLabels"]
            assert {s for s, _ in (k for k, v in pods.items() if _labels_match(selector, v))} == {study}
            for rule in policy["spec"]["ingress"]:
                for peer in rule["from"]:
                    labels = peer.get("podSelector", {}).get("matchLabels")
                    if labels and "namespaceSelector" not in peer:  # peers in this namespace
                        assert labels["app.kubernetes.io/instance"] == study


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_wiring_follows_the_new_names(overlay):
    """What kustomize renames must be renamed everywhere it is used, strings included."""
    path = EXAMPLES / overlay
    docs = build(path)
    name = study_name(path)
    full = f"{name}-tuner-service"
    [svc] = by_kind(docs, "Service")
    worker = [j for j in by_kind(docs, "Job") if j["metadata"]["name"] == f"{full}-worker"][0]
    chief = [j for j in by_kind(docs, "Job") if j["metadata"]["name"] == f"{full}-chief"][0]
    [c] = worker["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # The replacements in the overlay: the workers dial this study's chief Service.
    assert env["KERASTUNER_ORACLE_IP"] == f"{svc['metadata']['name']}.studies.svc.cluster.local"
    [pvc] = by_kind(docs, "PersistentVolumeClaim")
    for j in (chief, worker):
        pod = j["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert pod["serviceAccountName"] in {sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")}
    [binding] = by_kind(docs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{full}-chief", "namespace": "studies"}
    ]
    assert binding["roleRef"]["name"] == by_kind(docs, "Role")[0]["metadata"]["name"]
    # The chief keeps the chart's spot avoidance and the worker Job its spot-proof policy.
    assert chief["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert {
        "action": "Ignore",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [3, 143]},
    } in (worker["spec"]["podFailurePolicy"]["rules"])


def test_gpu_example_patches_count_gpu_type_image_and_storage():
    docs = build(EXAMPLES / "cnn-a100")
    worker = job_named(docs, "cnn-a100-tuner-service-worker")
    spec = worker["spec"]
    assert spec["parallelism"] == spec["completions"] == 8
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-a100"
    images = {c["image"] for j in by_kind(docs, "Job") for c in j["spec"]["template"]["spec"]["containers"]}
    assert images == {"us-docker.pkg.dev/acme-ml/tuner/tuner-service:0.1.0-gpu"}
    [pvc] = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "standard-rwx"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Ti"  # Filestore's minimum
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def job_named(docs, name):
    [j] = [d for d in by_kind(docs, "Job") if d["metadata"]["name"] == name]
    return j


def _gpu_parts(worker: dict) -> dict:
    pod = worker["spec"]["template"]["spec"]
    [c] = pod["containers"]
    return {
        "tolerations": pod.get("tolerations"),
        "require_gpu": [e for e in c["env"] if e["name"] == "TUNER_SERVICE_REQUIRE_GPU"],
        "limits": {k: v for k, v in c["resources"]["limits"].items() if k == "nvidia.com/gpu"},
        "requests": {k: v for k, v in c["resources"]["requests"].items() if k == "nvidia.com/gpu"},
        "tag": c["image"].rsplit(":", 1)[1],
    }


def test_gpu_component_is_what_the_chart_renders_for_gpu_workers(tmp_path):
    """components/gpu is written by hand: it must add exactly what worker.gpu.enabled adds."""
    examples = copy_tree(tmp_path)
    overlay = examples / "gpu-only"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../../../k8s/kustomize/base"],
                "components": ["../../../k8s/kustomize/components/gpu"],
                "configMapGenerator": [{"name": "tuner-service-study", "files": ["study.yaml"]}],
            }
        )
    )
    (overlay / "study.yaml").write_text("name: x\n")
    ours = job_named(build(overlay), "tuner-service-worker")
    chart = job(render("--set", "worker.gpu.enabled=true"), "worker")
    assert _gpu_parts(ours) == _gpu_parts(chart)
    assert _gpu_parts(ours)["require_gpu"] and _gpu_parts(ours)["limits"]


def test_fix_permissions_component_is_what_the_chart_renders():
    docs = build(EXAMPLES / "cnn-a100")
    chart = render("--set", "persistence.fixPermissions=true", "--set", "worker.gpu.enabled=true")
    for component in ("chief", "worker"):
        ours = job_named(docs, f"cnn-a100-tuner-service-{component}")
        theirs = job(chart, component)
        [init] = ours["spec"]["template"]["spec"]["initContainers"]
        [expected] = theirs["spec"]["template"]["spec"]["initContainers"]
        assert {**init, "image": None} == {**expected, "image": None}
        assert init["image"] == ours["spec"]["template"]["spec"]["containers"][0]["image"]
        assert ours["metadata"]["annotations"] == theirs["metadata"]["annotations"]


def test_checkov_zero_failures_on_the_overlays(tmp_path):
    checkov = require_tool("checkov")
    examples = copy_tree(tmp_path / "tree")
    renamed_copy(examples, "cnn-a100", "cnn-b")
    out = tmp_path / "rendered"
    out.mkdir()
    for overlay in [*OVERLAYS, "cnn-b"]:
        (out / f"{overlay}.yaml").write_text(build_text(examples / overlay))
    # The project's checkov configuration, but listing the skipped checks too (quiet: false).
    config = tmp_path / "checkov.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(CHECKOV_CONFIG.read_text()), "quiet": False}))
    proc = run(
        [checkov, "--config-file", str(config), "--framework", "kubernetes", "--directory", str(out)]
        + ["--output", "json", "--skip-download"],
        check=False,
    )
    report = json.loads(proc.stdout)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 300
    # The only inline skips: CAP_CHOWN of the permissions init container (cnn-a100, cnn-b) and
    # the side-loaded image's pull policy on kind (mlp-kind), each with its reason.
    skipped = {(c["check_id"], c["resource"].split(".")[-1]) for c in report["results"]["skipped_checks"]}
    assert {check for check, _ in skipped} == {"CKV_K8S_25", "CKV_K8S_15"}
    assert {res for check, res in skipped if check == "CKV_K8S_15"} == {
        "mlp-kind-tuner-service-chief",
        "mlp-kind-tuner-service-worker",
    }
    assert all(c["check_result"]["suppress_comment"] for c in report["results"]["skipped_checks"])
