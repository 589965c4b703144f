"""The wiring test: the chart's rendered chief and worker pod specs, run as local processes.

Takes the Jobs that `helm template` renders and runs each container's exact command, args and
environment the way the kubelet would: env entries resolved in order (values, `$(VAR)`
expansion, downward-API fieldRefs, secretKeyRefs), JOB_COMPLETION_INDEX added by the Indexed
Job controller, every volume a temporary folder (the ConfigMap's and Secrets' keys as files, one
folder per claim shared by all pods, one per emptyDir and pod), and the chief Service's DNS name
mapped to 127.0.0.1. Paths under a mount point are mapped to its folder: that rewriting and the
DNS mapping are the only liberties taken. Token auth and TLS are on (the chief's certificate in a
cert-manager-style Secret): the kubelet's probe is replayed against the chief's oracle port, and
a client without the token, or without TLS, is refused. A tiny search (2 trials, 1 epoch, 400
images) must complete with results.json and best_model.keras on the shared claim.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures.pki import make_pki
from tests.helpers import NAMESPACE, REPO, SHARED_KERAS_HOME, by_kind, free_port, job, render, study_dict

pytestmark = [pytest.mark.k8s, pytest.mark.k8s_wiring, pytest.mark.e2e]

SEARCH_TIMEOUT = 420


class Pod:
    """One rendered pod, materialised as a local process."""

    def __init__(self, name, pod_spec, docs, workdir: Path, claims: dict[str, Path], annotations=None):
        self.name = name
        self.uid = str(uuid.uuid4())
        self.annotations = annotations or {}
        self.spec = pod_spec
        self.docs = docs
        self.root = workdir / name
        [self.container] = pod_spec["containers"]
        self.volumes = {v["name"]: self._materialise(v, claims) for v in pod_spec["volumes"]}
        # mountPath -> local folder, longest first so nested mounts win.
        self.mounts = sorted(
            ((m["mountPath"].rstrip("/"), self.volumes[m["name"]]) for m in self.container["volumeMounts"]),
            key=lambda pair: -len(pair[0]),
        )
        self._rewrite_config_files()

    # -- volumes ---------------------------------------------------------------------------
    def _materialise(self, volume, claims) -> Path:
        if "configMap" in volume:
            [cm] = [
                d
                for d in by_kind(self.docs, "ConfigMap")
                if d["metadata"]["name"] == volume["configMap"]["name"]
            ]
            folder = self.root / "volumes" / volume["name"]
            folder.mkdir(parents=True)
            for key, text in cm["data"].items():
                (folder / key).write_text(text)
            return folder
        if "persistentVolumeClaim" in volume:
            return claims[volume["persistentVolumeClaim"]["claimName"]]
        if "secret" in volume:
            return self._materialise_secret(volume)
        if "emptyDir" in volume:
            folder = self.root / "volumes" / volume["name"]
            folder.mkdir(parents=True)
            return folder
        raise AssertionError(f"unsupported volume {volume}")

    def _materialise_secret(self, volume) -> Path:
        """The listed keys as files (mode as given); a missing key only when ``optional``."""
        ref = volume["secret"]
        found = [d for d in by_kind(self.docs, "Secret") if d["metadata"]["name"] == ref["secretName"]]
        data = found[0].get("data", {}) if found else {}
        folder = self.root / "volumes" / volume["name"]
        folder.mkdir(parents=True)
        for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
            if item["key"] not in data:
                assert ref.get("optional"), f"Secret {ref['secretName']} has no key {item['key']}"
                continue
            path = folder / item["path"]
            path.write_bytes(base64.b64decode(data[item["key"]]))
            path.chmod(ref.get("defaultMode", 0o644))
        return folder

    def _rewrite_config_files(self) -> None:
        for mount in self.container["volumeMounts"]:
            vol = next(v for v in self.spec["volumes"] if v["name"] == mount["name"])
            if "configMap" in vol:
                for path in self.volumes[mount["name"]].iterdir():
                    path.write_text(self.map_paths_in_text(path.read_text()))

    def map_path(self, value: str) -> str:
        for mount_path, folder in self.mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(folder) + value[len(mount_path) :]
        return value

    def map_paths_in_text(self, text: str) -> str:
        # Values that are absolute paths (e.g. `directory: /data/studies` in the study file).
        return re.sub(r"(?<=[\s:=])(/[^\s\"']+)", lambda m: self.map_path(m.group(1)), text)

    # -- environment -------------------------------------------------------------------------
    def _field(self, path: str) -> str:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": NAMESPACE,
            "metadata.uid": self.uid,
        }
        if path in fields:
            return fields[path]
        m = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
        if m:
            return self.annotations[m.group(1)]
        raise AssertionError(f"unsupported fieldRef {path}")

    def _secret(self, ref) -> str:
        [secret] = [d for d in by_kind(self.docs, "Secret") if d["metadata"]["name"] == ref["name"]]
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    def resolved_env(self) -> dict[str, str]:
        """The container's env as the kubelet builds it (dependent vars expand in order)."""
        env: dict[str, str] = {}
        for item in self.container["env"]:
            if "value" in item:
                value = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: env.get(m.group(1), m.group(0)),
                    item["value"],
                )
            elif "fieldRef" in item["valueFrom"]:
                value = self._field(item["valueFrom"]["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in item["valueFrom"]:
                value = self._secret(item["valueFrom"]["secretKeyRef"])
            else:
                raise AssertionError(f"unsupported env {item}")
            env[item["name"]] = value
        if "batch.kubernetes.io/job-completion-index" in self.annotations:
            env["JOB_COMPLETION_INDEX"] = self.annotations["batch.kubernetes.io/job-completion-index"]
        return env

    def start(
        self, shim_dir: Path, host_map: dict[str, str], own_ports: dict[str, str] | None = None
    ) -> subprocess.Popen:
        env = {
            name: ":".join(self.map_path(part) for part in host_map.get(value, value).split(":"))
            for name, value in self.resolved_env().items()
        }
        # Pods have their own network namespaces; on one host, ports a pod listens on (its
        # metrics port) are moved to free ones, or the pods would collide on loopback.
        env.update(own_ports or {})
        self.env = env
        base = {"PATH": f"{shim_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        argv = [*self.container["command"], *(self.map_path(a) for a in self.container["args"])]
        self.argv = argv
        self.log_path = self.root / "log.txt"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed by the test
        self.proc = subprocess.Popen(
            argv,
            env={**base, **env},
            cwd=env["HOME"],  # the image's WORKDIR is $HOME (already mapped above)
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc

    def stop(self) -> None:
        if getattr(self, "proc", None) is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def tail(self, n: int = 60) -> str:
        if getattr(self, "proc", None) is None:
            return f"--- {self.name}: not started"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return f"--- {self.name} (exit {self.proc.returncode}) argv={self.argv}\n" + "\n".join(lines[-n:])


def tcp_accepts(port: int) -> bool:
    """What the kubelet's `tcpSocket:` probe asks: does the port accept a connection."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def oracle_call(port: int, ca: Path | None) -> str:
    """The status code of a GetSpace without a token (over TLS when ``ca`` is given)."""
    import grpc

    from tuner_service import compat
    from tuner_service.auth import ClientSecurity

    with ClientSecurity(ca=ca).channel(f"127.0.0.1:{port}") as channel:
        try:
            stub = compat.service_pb2_grpc().OracleStub(channel)
            stub.GetSpace(compat.service_pb2().GetSpaceRequest(), timeout=5)
        except grpc.RpcError as err:
            return err.code().name
    return "OK"


def grpc_health(port: int, ca: Path | None = None) -> str | None:
    """grpc.health.v1.Health/Check for service "" (what the kubelet's `grpc:` probe asks), over
    TLS verified with ``ca`` when given."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tuner_service.auth import ClientSecurity

    with ClientSecurity(ca=ca).channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.fixture
def shim_dir(tmp_path) -> Path:
    """`tuner-service` on PATH, as the image's console script: this checkout, this Python; and
    `tini`, the image's PID 1, as what it is to the command line: `tini -- PROGRAM ARGS` runs
    PROGRAM ARGS (its signal forwarding is the image's concern, not the pod spec's)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "tuner-service"
    shim.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m tuner_service "$@"\n'
    )
    shim.chmod(0o755)
    tini = folder / "tini"
    tini.write_text(
        '#!/bin/sh\n[ "$1" = "--" ] || { echo "tini: expected --" >&2; exit 2; }\nshift\nexec "$@"\n'
    )
    tini.chmod(0o755)
    return folder


def test_rendered_pods_complete_a_tiny_search(tmp_path, shim_dir):
    if not (SHARED_KERAS_HOME / "datasets" / "fashion-mnist").is_dir():
        pytest.skip(f"Fashion-MNIST sample not found at {SHARED_KERAS_HOME}")
    pytest.importorskip("keras_tuner")
    oracle_port, status_port, metrics_port = free_port(), free_port(), free_port()
    values = {
        # The tests' tiny study; the chart sets the ports and the directory is on the volume.
        "study": {
            **{k: v for k, v in study_dict(tmp_path, name="wiring").items() if not k.endswith("_port")},
            "retrain_best": True,
            "directory": "/data/studies",
        },
        "chief": {"ports": {"oracle": oracle_port, "status": status_port}},
        "metrics": {"port": metrics_port},
        "worker": {"replicas": 2, "gpu": {"enabled": False}},
        # A pre-filled, read-only dataset cache claim: here, the shared Fashion-MNIST sample.
        "kerasHome": {"existingClaim": "keras-datasets"},
        "auth": {"enabled": True, "token": "wiring-test-token"},
        "tls": {"enabled": True, "secretName": "wiring-tls"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    docs = render("--values", str(values_file))

    [svc] = by_kind(docs, "Service")
    service_dns = f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    # The kubernetes.io/tls Secret a cert-manager Certificate would make for the chief Service
    # (the IP because the Service name is mapped to loopback here).
    pki = make_pki(tmp_path / "pki", (f"DNS:{service_dns}", "IP:127.0.0.1"))
    files = {"tls.crt": pki.cert, "tls.key": pki.key, "ca.crt": pki.ca}
    docs = [
        *docs,
        {
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "wiring-tls"},
            "data": {key: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()},
        },
    ]
    claims = {
        pvc["metadata"]["name"]: tmp_path / "claims" / pvc["metadata"]["name"]
        for pvc in by_kind(docs, "PersistentVolumeClaim")
    }
    claims["keras-datasets"] = SHARED_KERAS_HOME  # mounted read-only by the pod spec
    for folder in claims.values():
        folder.mkdir(parents=True, exist_ok=True)

    chief_job, worker_job = job(docs, "chief"), job(docs, "worker")
    pods = [
        Pod(
            f"{chief_job['metadata']['name']}-x1",
            chief_job["spec"]["template"]["spec"],
            docs,
            tmp_path,
            claims,
        )
    ]
    for index in range(worker_job["spec"]["completions"]):
        pods.append(
            Pod(
                f"{worker_job['metadata']['name']}-{index}-x{index}",
                worker_job["spec"]["template"]["spec"],
                docs,
                tmp_path,
                claims,
                annotations={"batch.kubernetes.io/job-completion-index": str(index)},
            )
        )
    chief, workers = pods[0], pods[1:]

    # The workers dial exactly the chief Service's DNS name and port.
    for w in workers:
        env = w.resolved_env()
        assert env["KERASTUNER_ORACLE_IP"] == service_dns
        assert env["KERASTUNER_ORACLE_PORT"] == str(oracle_port)
        assert env["KERASTUNER_TUNER_ID"] == f"worker-{env['JOB_COMPLETION_INDEX']}"
        assert w.map_path(env["TUNER_SERVICE_AUTH_TOKENS_FILE"]).endswith("/volumes/auth/token")
        assert Path(w.map_path(env["TUNER_SERVICE_AUTH_TOKENS_FILE"])).read_text() == "wiring-test-token"
        assert Path(w.map_path(env["TUNER_SERVICE_TLS_CA"])).read_bytes() == pki.ca.read_bytes()
        assert not (w.volumes["tls"] / "tls.key").exists()  # the chief's key stays with the chief
    svc_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert svc_ports["grpc-oracle"] == oracle_port

    host_map = {service_dns: "127.0.0.1"}
    try:
        for pod in pods:  # no start order, as in a cluster: workers back off until the chief is up
            own = {"TUNER_SERVICE_METRICS_PORT": str(free_port())} if pod in workers else None
            pod.start(shim_dir, host_map, own)
        # With TLS the kubelet's probe is a TCP check (its gRPC probe speaks plaintext only).
        probe = chief.container["readinessProbe"]["tcpSocket"]["port"]
        deadline = time.monotonic() + SEARCH_TIMEOUT
        health = None
        while time.monotonic() < deadline and chief.proc.poll() is None and health != "SERVING":
            health = grpc_health(probe, pki.ca) if tcp_accepts(probe) else None
            time.sleep(0.5)
        assert health == "SERVING", "chief never served its health service over TLS"
        # The chief the chart wires refuses a client without the token, and plaintext.
        assert oracle_call(probe, pki.ca) == "UNAUTHENTICATED"
        assert oracle_call(probe, None) == "UNAVAILABLE"
        while time.monotonic() < deadline and any(p.proc.poll() is None for p in pods):
            time.sleep(1)
        codes = {p.name: p.proc.returncode for p in pods}
        assert all(code == 0 for code in codes.values()), codes
    except BaseException:
        for pod in pods:
            pod.stop()
        print("\n\n".join(p.tail() for p in pods))
        raise
    for pod in pods:
        pod.stop()

    # The chief's results are on the shared claim, where the study file's directory says.
    data = claims[f"{chief_job['metadata']['name'].removesuffix('-chief')}-data"]
    project = data / "studies" / "wiring"
    results = yaml.safe_load((project / "results.json").read_text())
    assert results["trials_completed"] == 2, results
    assert {t["tuner_id"] for t in results["trials"]} <= {"worker-0", "worker-1"}
    assert (project / "best_model.keras").is_file()
    # Nothing was written outside the mapped volumes' folders of the pods, and the read-only
    # dataset claim was only read.
    assert not any(SHARED_KERAS_HOME.rglob("*.tmp"))
    shutil.rmtree(tmp_path / "claims", ignore_errors=True)
