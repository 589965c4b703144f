"""The Helm chart: lint, render every preset, validate against the oldest and newest supported
Kubernetes API, and check the properties the chart promises (names, labels, security, GPUs,
wiring between the chief, its Service and the workers, NetworkPolicy, monitoring)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml

from .conftest import (
    CHART,
    K8S_VERSIONS,
    NAMESPACE,
    PRESETS,
    RELEASE,
    ROOT,
    by_kind,
    job,
    preset_args,
    render,
    render_text,
    require_tool,
    run,
)

pytestmark = pytest.mark.k8s

FULLNAME = f"{RELEASE}-tuner-service"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def pod_specs(docs):
    for d in by_kind(docs, "Job"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def env_of(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_expected_presets_exist():
    assert {"default", "cpu", "workers16", "monitoring", "existing-claim", "auth"} <= set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_helm_lint_strict(preset):
    helm = require_tool("helm")
    out = run([helm, "lint", "--strict", str(CHART), *preset_args(preset)]).stdout
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_validates_strictly(preset, version, tmp_path):
    validate = require_tool("kubernetes-validate")
    manifest = tmp_path / f"{preset}.yaml"
    manifest.write_text(render_text(*preset_args(preset)))
    proc = run([validate, "--strict", "--quiet", "-k", version, str(manifest)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Only the Prometheus Operator CRDs have no bundled schema; nothing else may be unchecked.
    unchecked = re.findall(r"Couldn't find schema for kind (\w+)", proc.stdout + proc.stderr)
    assert set(unchecked) <= CRD_KINDS


def _validate_monitoring(objects, tmp_path):
    node = shutil.which("node")
    models = ROOT / ".tools" / "node"
    if node is None or not (models / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        message = "node or @kubernetes-models/prometheus-operator missing: run scripts/install-k8s-tools.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = tmp_path / "objects.json"
    data.write_text(json.dumps(objects))
    script = ROOT / "tests" / "k8s" / "validate_monitoring.mjs"
    return run([node, str(script), str(models), str(data)], check=False)


def test_monitoring_objects_validate_against_crd_schemas(tmp_path):
    """What kubernetes-validate cannot check: the Prometheus Operator kinds, by their CRD schemas."""
    docs = [d for d in render(*preset_args("monitoring")) if d["kind"] in CRD_KINDS]
    assert {d["kind"] for d in docs} == CRD_KINDS
    proc = _validate_monitoring(docs, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("OK ") == len(docs)
    # The validator is live: a broken object is refused.
    [sm] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    sm["spec"]["endpoints"][0]["interval"] = "often"
    proc = _validate_monitoring([sm], tmp_path)
    assert proc.returncode == 1 and "interval must match pattern" in proc.stdout


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_names_labels_and_namespace(preset):
    docs = render(*preset_args(preset))
    for d in docs:
        meta = d["metadata"]
        assert meta["name"].startswith(FULLNAME) or meta["name"] in _external_names(preset), meta
        assert len(meta["name"]) <= 63
        assert meta["namespace"] == NAMESPACE
        labels = meta["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, (d["kind"], meta["name"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE


def _external_names(preset):
    return set()


def test_two_releases_share_a_namespace_without_collisions():
    a = {(d["kind"], d["metadata"]["name"]) for d in render()}
    helm = require_tool("helm")
    out = run([helm, "template", "other", str(CHART), "--namespace", NAMESPACE]).stdout
    b = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    assert a and b and not (a & b)
    # ... and their selectors do not overlap either.
    other = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Service"][0]
    assert other["spec"]["selector"]["app.kubernetes.io/instance"] == "other"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_pods_are_locked_down_and_bounded(preset):
    docs = render(*preset_args(preset))
    specs = list(pod_specs(docs))
    assert len(specs) == 2
    for name, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("hostNetwork") is None and spec.get("hostPID") is None
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["privileged"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            # Writable scratch where the read-only root would break Python / Keras.
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            env = env_of(c)
            for var in ("HOME", "TMPDIR", "KERAS_HOME"):
                assert any(env[var].startswith(m) for m in mounts), (name, var)
            assert env["MPLCONFIGDIR"].startswith(env["TMPDIR"])
        for v in spec["volumes"]:
            if "emptyDir" in v:
                assert v["emptyDir"].get("sizeLimit"), (name, v["name"])


def test_gpu_requests_by_default_and_switchable_off():
    worker = job(render(), "worker")["spec"]["template"]["spec"]
    [c] = worker["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
    assert c["image"] == "tuner-service:0.1.0-gpu"

    cpu = render(*preset_args("cpu"))
    assert "nvidia.com/gpu" not in render_text(*preset_args("cpu"))
    for _, spec in pod_specs(cpu):
        assert spec["containers"][0]["image"] == "tuner-service:0.1.0-cpu"
        assert "tolerations" not in spec


def test_chief_gpu_and_image_digest():
    docs = render("--set", "chief.gpu.enabled=true", "--set", f"image.digest=sha256:{'a' * 64}")
    chief = job(docs, "chief")["spec"]["template"]["spec"]["containers"][0]
    assert chief["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert chief["image"] == f"tuner-service@sha256:{'a' * 64}"


def test_chief_is_a_restartable_job_with_grpc_probes():
    docs = render()
    chief = job(docs, "chief")
    spec = chief["spec"]
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    assert spec["backoffLimit"] == 6
    rules = spec["podFailurePolicy"]["rules"]
    assert {
        "action": "FailJob",
        "onExitCodes": {"containerName": "chief", "operator": "In", "values": [2]},
    } in rules
    assert any(
        r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules
    )
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [c] = pod["containers"]
    assert c["command"] == ["tuner-service"]
    assert c["args"] == ["chief", "--config", "/etc/tuner-service/study.yaml"]
    env = env_of(c)
    assert env["KERASTUNER_TUNER_ID"] == "chief"
    assert env["KERASTUNER_ORACLE_IP"] == "0.0.0.0"
    assert env["KERASTUNER_ORACLE_PORT"] == "8000"
    # Readiness only by default: the chief closes its port before retraining the best model.
    assert c["readinessProbe"]["grpc"] == {"port": 8000}
    assert "livenessProbe" not in c and "startupProbe" not in c
    on = render("--set", "chief.livenessProbe.enabled=true", "--set", "chief.startupProbe.enabled=true")
    c_on = job(on, "chief")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c_on[probe]["grpc"] == {"port": 8000}, probe
        assert "enabled" not in c_on[probe]
    # Auth and TLS are off by default (stock keras-tuner workers cannot send a token).
    assert not {k for k in env if k.startswith(("TUNER_SERVICE_AUTH", "TUNER_SERVICE_TLS"))}
    assert not {v["name"] for v in pod["volumes"]} & {"auth", "auth-accepted", "tls"}


def test_service_targets_the_chief_ports():
    docs = render()
    [svc] = by_kind(docs, "Service")
    chief = job(docs, "chief")
    pod_labels = chief["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # The worker Job's pods must not match the chief Service.
    worker_labels = job(docs, "worker")["spec"]["template"]["metadata"]["labels"]
    assert not svc["spec"]["selector"].items() <= worker_labels.items()
    container_ports = {
        p["name"]: p["containerPort"] for p in chief["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert service_ports == {
        "grpc-oracle": (8000, "grpc-oracle"),
        "grpc-status": (8001, "grpc-status"),
        "http-metrics": (9090, "http-metrics"),
    }
    assert set(container_ports) == set(service_ports)


def test_workers_indexed_job_wiring():
    docs = render(*preset_args("workers16"))
    worker = job(docs, "worker")
    spec = worker["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 16
    assert spec["backoffLimitPerIndex"] == 3 and spec["maxFailedIndexes"] == 4
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    assert c["command"] == ["tuner-service"]
    assert c["args"] == ["worker", "--config", "/etc/tuner-service/study.yaml"]
    env = [e["name"] for e in c["env"]]
    # The tuner id is stable per completion index, defined after the variable it expands.
    assert env.index("WORKER_INDEX") < env.index("KERASTUNER_TUNER_ID")
    envd = env_of(c)
    assert envd["WORKER_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert envd["KERASTUNER_TUNER_ID"] == "worker-$(WORKER_INDEX)"
    [svc] = by_kind(docs, "Service")
    assert envd["KERASTUNER_ORACLE_IP"] == f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    oracle = [p for p in svc["spec"]["ports"] if p["name"] == "grpc-oracle"][0]
    assert envd["KERASTUNER_ORACLE_PORT"] == str(oracle["port"])
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_study_configmap_is_the_values_study_plus_ports():
    docs = render()
    [cm] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-study")]
    study = yaml.safe_load(cm["data"]["study.yaml"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert study == {**values["study"], "status_port": 8001, "metrics_port": 9090}
    off = render("--set", "metrics.enabled=false")
    [cm] = [d for d in by_kind(off, "ConfigMap") if d["metadata"]["name"].endswith("-study")]
    assert yaml.safe_load(cm["data"]["study.yaml"])["metrics_port"] == 0
    # Mounted where the entrypoints read it, on the shared volume's path.
    chief = job(docs, "chief")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in chief["containers"][0]["volumeMounts"]}
    assert mounts["study"] == "/etc/tuner-service"
    assert study["directory"].startswith(mounts["data"] + "/")


def test_study_directory_outside_the_volume_is_refused():
    helm = require_tool("helm")
    proc = run([helm, "template", "x", str(CHART), "--set", "study.directory=/elsewhere"], check=False)
    assert proc.returncode != 0
    assert "study.directory (/elsewhere) must lie under persistence.mountPath (/data)" in proc.stderr


def test_existing_claim_preset():
    docs = render(*preset_args("existing-claim"))
    assert not by_kind(docs, "PersistentVolumeClaim")
    for _name, spec in pod_specs(docs):
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["data"]["persistentVolumeClaim"] == {"claimName": "shared-studies"}
        assert vols["keras-home"]["persistentVolumeClaim"] == {
            "claimName": "keras-datasets",
            "readOnly": True,
        }
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["data"]["mountPath"] == "/mnt/shared"
        assert mounts["keras-home"]["readOnly"] is True


def test_created_claim_is_rwx_and_kept():
    [pvc] = by_kind(render(), "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for _, spec in pod_specs(render()):
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def _rules_by_port(policy):
    out = {}
    for rule in policy["spec"].get("ingress", []):
        for port in rule["ports"]:
            out[port["port"]] = rule["from"]
    return out


def test_network_policies():
    docs = render()
    pols = {p["metadata"]["name"].rsplit("-", 1)[1]: p for p in by_kind(docs, "NetworkPolicy")}
    chief, worker = pols["chief"], pols["worker"]
    assert chief["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "chief"
    rules = _rules_by_port(chief)
    worker_pod_labels = job(docs, "worker")["spec"]["template"]["metadata"]["labels"]
    for port in ("grpc-oracle", "grpc-status"):
        peers = rules[port]
        assert peers[0]["podSelector"]["matchLabels"].items() <= worker_pod_labels.items()
        assert "namespaceSelector" not in peers[0]  # this namespace only
        assert peers[1] == {"podSelector": {"matchLabels": {f"{FULLNAME}-client": "true"}}}
    metrics_from = rules["http-metrics"]
    assert metrics_from == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {},
        }
    ]
    assert set(_rules_by_port(worker)) == {"http-metrics"}
    # Without metrics the workers accept nothing at all.
    off = {
        p["metadata"]["name"]: p for p in by_kind(render("--set", "metrics.enabled=false"), "NetworkPolicy")
    }
    assert off[f"{FULLNAME}-worker"]["spec"]["ingress"] == []
    assert set(_rules_by_port(off[f"{FULLNAME}-chief"])) == {"grpc-oracle", "grpc-status"}
    # The named ports exist on the containers they protect.
    chief_ports = {
        p["name"] for p in job(docs, "chief")["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert set(rules) <= chief_ports


def test_network_policy_client_labels_and_namespaces():
    docs = render(*preset_args("auth"))
    [chief] = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-chief")]
    peers = _rules_by_port(chief)["grpc-oracle"]
    assert peers[1] == {
        "podSelector": {"matchLabels": {"tuner-service.io/client": "true"}},
        "namespaceSelector": {"matchLabels": {"team": "ml"}},
    }
    assert not by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_monitoring_preset():
    docs = render(*preset_args("monitoring"))
    [sm] = by_kind(docs, "ServiceMonitor")
    [svc] = by_kind(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [pm] = by_kind(docs, "PodMonitor")
    worker = job(docs, "worker")["spec"]["template"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= worker["metadata"]["labels"].items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {
        p["name"] for p in worker["spec"]["containers"][0]["ports"]
    }
    [rule] = by_kind(docs, "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    [dash] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["tuner-service.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
    # Off by default: the chart installs on clusters without the Prometheus Operator CRDs.
    kinds = {d["kind"] for d in render()}
    assert not kinds & CRD_KINDS


SECRETS_DIR = "/var/run/secrets/tuner-service"


def _secret_volumes(spec) -> dict:
    return {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}


def test_auth_and_tls_preset_mount_the_secrets_into_chief_and_workers():
    docs = render(*preset_args("auth"))
    [secret] = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-auth"
    assert set(secret["data"]) == {"token", "accepted-tokens"}
    auth = f"{FULLNAME}-auth"
    chief = job(docs, "chief")["spec"]["template"]["spec"]
    worker = job(docs, "worker")["spec"]["template"]["spec"]
    # The chief: the token and the rotated ones (optional key), its certificate, key and CA.
    assert _secret_volumes(chief) == {
        "auth": {"secretName": auth, "defaultMode": 0o440, "items": [{"key": "token", "path": "token"}]},
        "auth-accepted": {
            "secretName": auth,
            "defaultMode": 0o440,
            "optional": True,
            "items": [{"key": "accepted-tokens", "path": "accepted-tokens"}],
        },
        "tls": {
            "secretName": "chief-tls",
            "defaultMode": 0o440,
            "items": [
                {"key": "tls.crt", "path": "tls.crt"},
                {"key": "tls.key", "path": "tls.key"},
                {"key": "ca.crt", "path": "ca.crt"},
            ],
        },
    }
    [c] = chief["containers"]
    env = env_of(c)
    assert env["TUNER_SERVICE_AUTH_TOKENS_FILE"] == (
        f"{SECRETS_DIR}/auth/token:{SECRETS_DIR}/auth-accepted/accepted-tokens"
    )
    assert env["TUNER_SERVICE_TLS_CERT"] == f"{SECRETS_DIR}/tls/tls.crt"
    assert env["TUNER_SERVICE_TLS_KEY"] == f"{SECRETS_DIR}/tls/tls.key"
    assert env["TUNER_SERVICE_TLS_CA"] == f"{SECRETS_DIR}/tls/ca.crt"
    # The kubelet's gRPC probe cannot speak TLS: a TCP check of the oracle port instead.
    assert c["readinessProbe"]["tcpSocket"] == {"port": 8000} and "grpc" not in c["readinessProbe"]
    # Workers: the token they send and the CA they verify with, never the chief's key.
    assert _secret_volumes(worker) == {
        "auth": {"secretName": auth, "defaultMode": 0o440, "items": [{"key": "token", "path": "token"}]},
        "tls": {
            "secretName": "chief-tls",
            "defaultMode": 0o440,
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        },
    }
    [w] = worker["containers"]
    env = env_of(w)
    assert env["TUNER_SERVICE_AUTH_TOKENS_FILE"] == f"{SECRETS_DIR}/auth/token"
    assert env["TUNER_SERVICE_TLS_CA"] == f"{SECRETS_DIR}/tls/ca.crt"
    assert "TUNER_SERVICE_TLS_KEY" not in env and "TUNER_SERVICE_TLS_CERT" not in env
    for name, spec in pod_specs(docs):
        [c] = spec["containers"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        for volume in _secret_volumes(spec):
            assert mounts[volume]["readOnly"] is True, (name, volume)
            assert mounts[volume]["mountPath"].startswith(SECRETS_DIR + "/"), (name, volume)
        # Secrets are files, never environment values or arguments.
        assert not [e for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})], name
        assert "ci-only" not in json.dumps(c), name
        assert env_of(c)["PYTHONPATH"] == "/opt/tuner-service/user"
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["user-code"]["configMap"]["name"] == "my-models"


def test_auth_with_an_existing_secret_and_tls_options():
    docs = render(
        "--set", "auth.enabled=true", "--set", "auth.existingSecret=my-token",
        "--set", "auth.secretKey=current",
        "--set", "tls.enabled=true", "--set", "tls.secretName=cm-tls", "--set", "tls.caKey=root.pem",
        "--set", "tls.serverName=chief.example",
    )  # fmt: skip
    assert not by_kind(docs, "Secret")  # used as is, none created
    for component in ("chief", "worker"):
        spec = job(docs, component)["spec"]["template"]["spec"]
        volumes = _secret_volumes(spec)
        assert volumes["auth"]["secretName"] == "my-token"
        assert volumes["auth"]["items"] == [{"key": "current", "path": "token"}]
        assert volumes["tls"]["secretName"] == "cm-tls"
        assert {"key": "root.pem", "path": "ca.crt"} in volumes["tls"]["items"]
        assert env_of(spec["containers"][0])["TUNER_SERVICE_TLS_SERVER_NAME"] == "chief.example"
    # TLS alone: no token anywhere; auth alone: the gRPC probe stays.
    tls_only = render("--set", "tls.enabled=true", "--set", "tls.secretName=cm-tls")
    chief = job(tls_only, "chief")["spec"]["template"]["spec"]
    assert set(_secret_volumes(chief)) == {"tls"}
    auth_only = render("--set", "auth.enabled=true")
    c = job(auth_only, "chief")["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"] == {"port": 8000}  # health needs no token


def test_notes_tell_how_to_watch_and_fetch_results():
    helm = require_tool("helm")
    out = run([helm, "install", "mnist", str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl -n studies logs -f job/mnist-tuner-service-chief" in notes
    assert "port-forward svc/mnist-tuner-service-chief 8001:8001" in notes
    assert "/data/studies/fashion-mnist-mlp/results.json" in notes
    assert 'mnist-tuner-service-client: "true"' in notes
    assert "tuner-service status --chief localhost:8001" in notes
    assert "TUNER_SERVICE_AUTH_TOKEN" not in notes  # auth is off by default
    secured = run(
        [helm, "install", "mnist", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
         "--set", "auth.enabled=true", "--set", "tls.enabled=true", "--set", "tls.secretName=chief-tls"]
    ).stdout.split("NOTES:", 1)[1]  # fmt: skip
    assert "get secret mnist-tuner-service-auth -o jsonpath='{.data.token}' | base64 -d" in secured
    assert "get secret chief-tls -o jsonpath='{.data.ca\\.crt}'" in secured
    assert "TUNER_SERVICE_TLS_SERVER_NAME=mnist-tuner-service-chief.studies.svc.cluster.local" in secured
    plaintext = run(
        [helm, "install", "mnist", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
         "--set", "auth.enabled=true"]
    ).stdout  # fmt: skip
    assert "the token travels in plaintext" in plaintext


def test_every_value_is_commented():
    """values.yaml: each key has a comment line right above it, or its parent or grandparent
    has (the keys inside a documented default, like resources.requests.cpu)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the ancestors
    missing = []
    prev = ""
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            prev = ""
            continue
        if stripped.startswith("#"):
            prev = stripped
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.\-]+):", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = prev.startswith("#")
            ancestors_documented = any(doc for _, doc in stack[-2:])
            if not (documented or ancestors_documented):
                missing.append(f"values.yaml:{lineno}: {stripped}")
            stack.append((indent, documented))
        prev = stripped
    assert not missing, "undocumented values:\n" + "\n".join(missing)
