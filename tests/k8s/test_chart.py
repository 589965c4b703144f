"""The Helm chart: lint, render every preset, validate against the oldest and newest supported
Kubernetes API, and check the properties the chart promises (names, labels, security, GPUs,
wiring between the chief, its Service and the workers, NetworkPolicy, monitoring)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import (
    CHART,
    K8S_VERSIONS,
    NAMESPACE,
    PRESETS,
    RELEASE,
    REPO,
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
CLUSTER_SCOPED = {"PriorityClass"}


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
    models = REPO / ".tools" / "node"
    if node is None or not (models / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        message = "node or @kubernetes-models/prometheus-operator missing: run scripts/install-k8s-tools.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = tmp_path / "objects.json"
    data.write_text(json.dumps(objects))
    script = REPO / "tests" / "k8s" / "validate_monitoring.mjs"
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
        if d["kind"] in CLUSTER_SCOPED:  # named after namespace and release: unique in the cluster
            assert meta["name"] == f"{NAMESPACE}-{FULLNAME}-chief" and "namespace" not in meta
        else:
            assert meta["name"].startswith(FULLNAME) or meta["name"] in _external_names(preset), meta
            assert meta["namespace"] == NAMESPACE
        assert len(meta["name"]) <= 63
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
    assert c["command"] == ["tini", "--", "tuner-service"]
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
    volumes = {v["name"] for v in pod["volumes"]}
    assert not volumes & {"auth", "auth-accepted", "tls", "tls-client", "tls-client-ca"}


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
    assert c["command"] == ["tini", "--", "tuner-service"]
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
    # The chief: the token and the rotated ones (optional key), its certificate, key and CA, and
    # (mutual TLS) the CA it verifies client certificates against.
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
        "tls-client-ca": {
            "secretName": "worker-client-tls",
            "defaultMode": 0o440,
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
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
    assert env["TUNER_SERVICE_TLS_CLIENT_CA"] == f"{SECRETS_DIR}/tls-client-ca/ca.crt"
    assert "TUNER_SERVICE_TLS_CLIENT_KEY" not in env and "TUNER_SERVICE_TLS_CLIENT_CERT" not in env
    # The kubelet's gRPC probe cannot speak TLS: a TCP check of the oracle port instead.
    assert c["readinessProbe"]["tcpSocket"] == {"port": 8000} and "grpc" not in c["readinessProbe"]
    # Workers: the token they send, the CA they verify with and their client certificate and
    # key; never the chief's key.
    assert _secret_volumes(worker) == {
        "auth": {"secretName": auth, "defaultMode": 0o440, "items": [{"key": "token", "path": "token"}]},
        "tls": {
            "secretName": "chief-tls",
            "defaultMode": 0o440,
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        },
        "tls-client": {
            "secretName": "worker-client-tls",
            "defaultMode": 0o440,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        },
    }
    [w] = worker["containers"]
    env = env_of(w)
    assert env["TUNER_SERVICE_AUTH_TOKENS_FILE"] == f"{SECRETS_DIR}/auth/token"
    assert env["TUNER_SERVICE_TLS_CA"] == f"{SECRETS_DIR}/tls/ca.crt"
    assert "TUNER_SERVICE_TLS_KEY" not in env and "TUNER_SERVICE_TLS_CERT" not in env
    assert env["TUNER_SERVICE_TLS_CLIENT_CERT"] == f"{SECRETS_DIR}/tls-client/tls.crt"
    assert env["TUNER_SERVICE_TLS_CLIENT_KEY"] == f"{SECRETS_DIR}/tls-client/tls.key"
    assert "TUNER_SERVICE_TLS_CLIENT_CA" not in env
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
        assert mounts["user-code"]["mountPath"] == "/opt/tuner-service/user/my_models"  # userCode.package


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


def test_mutual_tls_client_ca_only_in_the_chief_client_key_only_in_workers():
    """tls.clientAuth: the chief mounts the client CA (from another Secret when caSecretName is
    set), never a client key; each worker mounts its certificate and key; the probes stay TCP
    checks, which open no TLS session and so need no client certificate."""
    from tuner_service import process

    docs = render(
        "--set", "tls.enabled=true", "--set", "tls.secretName=chief-tls",
        "--set", "tls.clientAuth.enabled=true", "--set", "tls.clientAuth.secretName=worker-client",
        "--set", "tls.clientAuth.caSecretName=client-ca", "--set", "tls.clientAuth.caKey=root.pem",
        "--set", "chief.livenessProbe.enabled=true", "--set", "chief.startupProbe.enabled=true",
    )  # fmt: skip
    chief = job(docs, "chief")["spec"]["template"]["spec"]
    worker = job(docs, "worker")["spec"]["template"]["spec"]
    assert _secret_volumes(chief)["tls-client-ca"] == {
        "secretName": "client-ca",
        "defaultMode": 0o440,
        "items": [{"key": "root.pem", "path": "ca.crt"}],
    }
    assert "tls-client" not in _secret_volumes(chief)
    assert "tls-client-ca" not in _secret_volumes(worker)
    [c], [w] = chief["containers"], worker["containers"]
    # The names are the process contract's, the ones tuner_service/auth.py reads.
    assert env_of(c)[process.TLS_CLIENT_CA] == f"{SECRETS_DIR}/tls-client-ca/ca.crt"
    assert {process.TLS_CLIENT_CERT, process.TLS_CLIENT_KEY}.isdisjoint(env_of(c))
    assert env_of(w)[process.TLS_CLIENT_CERT] == f"{SECRETS_DIR}/tls-client/tls.crt"
    assert env_of(w)[process.TLS_CLIENT_KEY] == f"{SECRETS_DIR}/tls-client/tls.key"
    assert process.TLS_CLIENT_CA not in env_of(w)
    for container, volume in ((c, "tls-client-ca"), (w, "tls-client")):
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume]
        assert mount == {"name": volume, "mountPath": f"{SECRETS_DIR}/{volume}", "readOnly": True}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": 8000} and "grpc" not in c[probe], probe
    # Off (the default) with TLS on: nothing of it anywhere.
    tls_only = render("--set", "tls.enabled=true", "--set", "tls.secretName=chief-tls")
    for _, spec in pod_specs(tls_only):
        assert not {"tls-client", "tls-client-ca"} & set(_secret_volumes(spec))
        assert not [k for k in env_of(spec["containers"][0]) if k.startswith("TUNER_SERVICE_TLS_CLIENT")]


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
    assert "TUNER_SERVICE_TLS_CLIENT_CERT" not in secured  # mutual TLS is off by default
    mutual = run(
        [helm, "install", "mnist", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
         "--set", "tls.enabled=true", "--set", "tls.secretName=chief-tls",
         "--set", "tls.clientAuth.enabled=true", "--set", "tls.clientAuth.secretName=worker-client"]
    ).stdout.split("NOTES:", 1)[1]  # fmt: skip
    # The printed status command presents a client certificate, or the chief would refuse it.
    assert "get secret worker-client -o jsonpath='{.data.tls\\.crt}' | base64 -d > client.crt" in mutual
    assert (
        "(umask 077 && kubectl -n studies get secret worker-client -o jsonpath='{.data.tls\\.key}'" in mutual
    )
    assert (
        'TUNER_SERVICE_TLS_CLIENT_CERT="$PWD/client.crt" TUNER_SERVICE_TLS_CLIENT_KEY="$PWD/client.key"'
        in mutual
    )
    assert "Clients verify the chief with the CA of Secret chief-tls" in mutual
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


# -- Surviving spot capacity (issue 17) ------------------------------------------------------

SPOT_LABELS = {
    "cloud.google.com/gke-spot": ["true"],
    "cloud.google.com/gke-preemptible": ["true"],
    "eks.amazonaws.com/capacityType": ["SPOT"],
    "karpenter.sh/capacity-type": ["spot"],
}


def _required_terms(pod_spec) -> list[dict]:
    node = pod_spec.get("affinity", {}).get("nodeAffinity", {})
    return node.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])


def _avoids_spot(term: dict) -> bool:
    rules = {e["key"]: e for e in term.get("matchExpressions", [])}
    return all(
        key in rules and rules[key]["operator"] == "NotIn" and rules[key]["values"] == values
        for key, values in SPOT_LABELS.items()
    )


def test_chief_stays_off_spot_nodes_by_default_and_workers_do_not():
    docs = render()
    chief = job(docs, "chief")["spec"]["template"]["spec"]
    [term] = _required_terms(chief)
    assert _avoids_spot(term)
    # A node without any of these labels (on-demand capacity anywhere) still matches: NotIn.
    assert {e["operator"] for e in term["matchExpressions"]} == {"NotIn"}
    assert "affinity" not in job(docs, "worker")["spec"]["template"]["spec"]
    # Switchable off (all-spot clusters), and the label list is the user's to change.
    off = job(render("--set", "chief.avoidSpot=false"), "chief")["spec"]["template"]["spec"]
    assert "affinity" not in off
    only = render("--set-json", 'chief.spotNodeLabels={"pool-kind": ["spot", "preemptible"]}')
    [term] = _required_terms(job(only, "chief")["spec"]["template"]["spec"])
    assert {"key": "pool-kind", "operator": "NotIn", "values": ["spot", "preemptible"]} in term[
        "matchExpressions"
    ]


def test_chief_spot_rule_joins_every_term_of_the_users_affinity():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            }
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    docs = render("--set-json", f"chief.affinity={json.dumps(affinity)}")
    spec = job(docs, "chief")["spec"]["template"]["spec"]
    terms = _required_terms(spec)
    # Terms are ORed: each keeps what the user asked and gets the spot rule ANDed in.
    assert len(terms) == 2 and all(_avoids_spot(t) for t in terms)
    assert {"key": "pool", "operator": "In", "values": ["cpu"]} in terms[0]["matchExpressions"]
    assert (
        terms[1]["matchFields"]
        == affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][1][
            "matchFields"
        ]
    )
    assert "podAntiAffinity" in spec["affinity"]


def test_worker_exit_codes_usage_fails_the_job_chief_unreachable_is_not_counted():
    rules = job(render(), "worker")["spec"]["podFailurePolicy"]["rules"]
    by_code = {
        tuple(r["onExitCodes"]["values"]): r for r in rules if "onExitCodes" in r
    }  # the contract in docs/kubernetes.md
    assert by_code[(2,)]["action"] == "FailJob"
    # 3: gave up on an unreachable chief; 143: stopped by SIGTERM (it handed its trial back).
    assert by_code[(3, 143)]["action"] == "Ignore"
    assert by_code[(3, 143)]["onExitCodes"] == {
        "containerName": "worker",
        "operator": "In",
        "values": [3, 143],
    }
    # Rules are evaluated in order: the exit-code rules come before the disruption rule, and
    # nothing else is ignored (exit 1, a crash, still counts against backoffLimitPerIndex).
    assert [r["action"] for r in rules] == ["FailJob", "Ignore", "Ignore"]
    assert rules[2]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    # The chief's SIGTERM stays counted unless it is a disruption: a liveness probe (if turned
    # on) stops a hung chief with SIGTERM too, and that must not be retried forever.
    chief_codes = [
        r for r in job(render(), "chief")["spec"]["podFailurePolicy"]["rules"] if "onExitCodes" in r
    ]
    assert [(r["action"], r["onExitCodes"]["values"]) for r in chief_codes] == [("FailJob", [2])]


def test_worker_job_completes_when_one_worker_is_told_the_search_is_over():
    spec = job(render(), "worker")["spec"]
    assert spec["successPolicy"] == {"rules": [{"succeededCount": 1}]}
    assert spec["completionMode"] == "Indexed"  # successPolicy exists only for Indexed Jobs
    assert "successPolicy" not in job(render("--set", "worker.successPolicy=false"), "worker")["spec"]


def test_active_deadlines_are_optional_and_per_job():
    docs = render()
    assert "activeDeadlineSeconds" not in job(docs, "chief")["spec"]
    assert "activeDeadlineSeconds" not in job(docs, "worker")["spec"]
    big = render(*preset_args("workers16"))
    assert job(big, "worker")["spec"]["activeDeadlineSeconds"] == 604800
    assert job(big, "chief")["spec"]["activeDeadlineSeconds"] == 691200


def test_chief_grace_period_covers_the_metrics_linger():
    grace = lambda docs: job(docs, "chief")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]  # noqa: E731
    assert grace(render()) == 90  # linger 60 + 30
    assert grace(render("--set", "metrics.linger=300")) == 330
    assert grace(render("--set", "metrics.enabled=false")) == 60
    assert grace(render("--set", "chief.terminationGracePeriodSeconds=120")) == 120
    helm = require_tool("helm")
    proc = run(
        [helm, "template", "x", str(CHART), "--set", "chief.terminationGracePeriodSeconds=60"], check=False
    )
    assert proc.returncode != 0
    assert "chief.terminationGracePeriodSeconds (60) must exceed metrics.linger (60)" in proc.stderr
    worker = job(render("--set", "worker.terminationGracePeriodSeconds=100"), "worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 100


def test_priority_class_for_the_chief_is_optional():
    assert not by_kind(render(), "PriorityClass")
    assert "priorityClassName" not in job(render(), "chief")["spec"]["template"]["spec"]
    docs = render(*preset_args("workers16"))
    [pc] = by_kind(docs, "PriorityClass")
    assert pc["value"] == 1000000 and pc["globalDefault"] is False
    assert pc["preemptionPolicy"] == "PreemptLowerPriority"
    assert job(docs, "chief")["spec"]["template"]["spec"]["priorityClassName"] == pc["metadata"]["name"]
    assert "priorityClassName" not in job(docs, "worker")["spec"]["template"]["spec"]
    # An existing class named by the user wins, and none is created for it... unless asked.
    named = render("--set", "chief.priorityClassName=ml-critical")
    assert job(named, "chief")["spec"]["template"]["spec"]["priorityClassName"] == "ml-critical"
    assert not by_kind(named, "PriorityClass")


def test_two_releases_priority_classes_do_not_collide():
    helm = require_tool("helm")
    names = set()
    for release, ns in (("a", "x"), ("a", "y"), ("b", "x")):
        out = run(
            [helm, "template", release, str(CHART), "-n", ns, "--set", "priorityClass.create=true"]
        ).stdout
        [pc] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PriorityClass"]
        names.add(pc["metadata"]["name"])
    assert len(names) == 3


# -- Signals and the GPU contract ----------------------------------------------------------------


def test_tini_is_pid_1_in_every_container_unless_switched_off():
    for preset in sorted(PRESETS):
        for name, spec in pod_specs(render(*preset_args(preset))):
            [c] = spec["containers"]
            assert c["command"] == ["tini", "--", "tuner-service"], (preset, name)
    for _, spec in pod_specs(render("--set-json", "image.initProcess=[]")):
        assert spec["containers"][0]["command"] == ["tuner-service"]


def test_gpu_workers_require_a_gpu():
    worker = job(render(), "worker")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(worker)["TUNER_SERVICE_REQUIRE_GPU"] == "1"
    chief = job(render(), "chief")["spec"]["template"]["spec"]["containers"][0]
    assert "TUNER_SERVICE_REQUIRE_GPU" not in env_of(chief)  # the chief trains only at the end
    cpu = job(render(*preset_args("cpu")), "worker")["spec"]["template"]["spec"]["containers"][0]
    assert "TUNER_SERVICE_REQUIRE_GPU" not in env_of(cpu)


# -- Storage: the permissions init container -------------------------------------------------


def test_fix_permissions_is_off_by_default():
    for preset in sorted(set(PRESETS) - {"existing-claim"}):
        for _, spec in pod_specs(render(*preset_args(preset))):
            assert "initContainers" not in spec
    # The preset that turns it on (validated and scanned with the others) chowns its own paths.
    for _, spec in pod_specs(render(*preset_args("existing-claim"))):
        [init] = spec["initContainers"]
        assert env_of(init)["DATA_DIR"] == "/mnt/shared"
        assert env_of(init)["STUDY_DIR"] == "/mnt/shared/tuner/studies"
        assert init["volumeMounts"] == [{"name": "data", "mountPath": "/mnt/shared"}]


def test_fix_permissions_init_container_is_root_with_chown_only():
    docs = render("--set", "persistence.fixPermissions=true")
    for name, spec in pod_specs(docs):
        [init] = spec["initContainers"]
        assert init["name"] == "fix-permissions"
        assert init["image"] == spec["containers"][0]["image"]  # no second image to pull
        sc = init["securityContext"]
        assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}, name
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(init["resources"][kind])
        env = env_of(init)
        assert env == {"OWNER": "10001:10001", "DATA_DIR": "/data", "STUDY_DIR": "/data/studies"}
        assert init["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
        # The main container is unchanged: still non-root.
        assert spec["containers"][0]["securityContext"]["runAsNonRoot"] is True
    other = render(
        "--set",
        "persistence.fixPermissions=true",
        "--set",
        "containerSecurityContext.runAsUser=2000",
        "--set",
        "persistence.mountPath=/mnt/shared",
        "--set",
        "study.directory=/mnt/shared/a/b",
    )
    init = job(other, "worker")["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(init) == {"OWNER": "2000:10001", "DATA_DIR": "/mnt/shared", "STUDY_DIR": "/mnt/shared/a/b"}


def test_fix_permissions_script_chowns_the_path_from_the_volume_root_to_the_study(tmp_path):
    """The init container's script, run here with `chown` recorded instead of performed."""
    init = job(render("--set", "persistence.fixPermissions=true"), "chief")["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    data = tmp_path / "data"
    (data / "studies").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "chown.log"
    (bin_dir / "chown").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "chown").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OWNER": "10001:10001", "DATA_DIR": str(data)}
    for study_dir, expected in (
        (data / "studies", [data / "studies", data]),
        (data / "studies" / "new" / "deeper", [data / "studies", data]),  # missing ones: the app makes them
        (data, [data]),
    ):
        log.unlink(missing_ok=True)
        proc = subprocess.run(
            [*init["command"], *init["args"]],
            env={**env, "STUDY_DIR": str(study_dir)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert log.read_text().split("\n")[:-1] == [f"10001:10001 {p}" for p in expected]


# -- User code as a package -------------------------------------------------------------------


def test_user_code_configmap_mounts_as_a_package_that_imports(tmp_path):
    """`study.model: my_models.resnet:build` imports from a ConfigMap mounted by the chart."""
    docs = render(*preset_args("auth"))
    spec = job(docs, "worker")["spec"]["template"]["spec"]
    [c] = spec["containers"]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "user-code"]
    # The ConfigMap's files (here: `kubectl create configmap my-models --from-file=my_models/`)
    # land in the mount folder, which sits below a PYTHONPATH entry.
    folder = tmp_path / mount["mountPath"].lstrip("/")
    folder.mkdir(parents=True)
    (folder / "resnet.py").write_text("def build(hp):\n    return 'resnet'\n")
    pythonpath = tmp_path / env_of(c)["PYTHONPATH"].lstrip("/")
    model = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["study.yaml"])["model"]
    module, attr = model.split(":")
    code = f"import importlib; print(getattr(importlib.import_module({module!r}), {attr!r})(None))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(pythonpath)}, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "resnet", proc.stderr


def test_user_code_items_lay_out_nested_packages():
    items = [{"key": "nets_resnet.py", "path": "my_models/nets/resnet.py"}]
    docs = render("--set", "userCode.configMap=code", "--set-json", f"userCode.items={json.dumps(items)}")
    for _, spec in pod_specs(docs):
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["user-code"]["configMap"] == {"name": "code", "items": items}
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["user-code"] == "/opt/tuner-service/user"
