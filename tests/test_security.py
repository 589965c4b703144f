"""Token auth and TLS of the chief's two gRPC ports, over real gRPC on loopback (docs/security.md).

For the Oracle service and the status service alike: no token, a wrong token, the right one and a
rotated (second) one; TLS with the right CA, a wrong CA and plaintext against the TLS port; the
health service open without a token; an unmodified keras-tuner worker refused with the reason;
mutual TLS, also as the Helm chart wires it (its rendered env and Secret files, run).
The certificates come from a throwaway CA (tests/fixtures/pki.py, the ``openssl`` command).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import keras_tuner
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.sleepy import SleepyHyperModel
from tests.fixtures.pki import Pki, make_pki
from tests.helpers import REPO, by_kind, job, render, study_dict
from tuner_service import compat
from tuner_service.auth import (
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_CLIENT_CA_ENV,
    TLS_CLIENT_CERT_ENV,
    TLS_CLIENT_KEY_ENV,
    TLS_KEY_ENV,
    TOKEN_ENV,
    TOKENS_FILE_ENV,
    ClientSecurity,
    SecurityConfigError,
    ServerSecurity,
)
from tuner_service.chief.chief import Chief
from tuner_service.chief.server import make_server
from tuner_service.chief.servicer import OracleServicer
from tuner_service.client import NotAuthorized, ServiceOracleClient
from tuner_service.spec import validate
from tuner_service.status._generated import status_pb2 as status_pb
from tuner_service.status._generated import status_pb2_grpc as status_grpc
from tuner_service.status.client import StatusClient, StatusUnavailable
from tuner_service.status.server import make_status_server
from tuner_service.study import endpoints
from tuner_service.study.files import STATE as STATE_FILE
from tuner_service.study.ledger import Ledger
from tuner_service.tuners import build_oracle, build_tuner

pb2 = compat.service_pb2()
TOKEN = "current-token-Zq8v"
ROTATED = "next-token-Pk41"  # the second accepted token, from the tokens file
SERVICES = ("oracle", "status")
DEADLINE = 10.0  # seconds for any call on loopback


# -- a throwaway CA ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- the two servers, each with its security -------------------------------------------------------
@dataclass
class Served:
    port: int
    call: Callable[[grpc.Channel, tuple], object]  # one real call of the service
    service_name: str


def _oracle(tmp_path: Path) -> keras_tuner.Oracle:
    tuner = keras_tuner.RandomSearch(
        SleepyHyperModel(),
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=3,
        directory=str(tmp_path / "chief"),
        project_name="p",
    )
    return tuner.oracle


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str, ServerSecurity], Served]]:
    stops: list[Callable[[], None]] = []

    def start(service: str, security: ServerSecurity) -> Served:
        ledger = Ledger("secure", 3, tmp_path / STATE_FILE)
        if service == "oracle":
            built = make_server(
                OracleServicer(_oracle(tmp_path), ledger, lease_timeout=60), "127.0.0.1:0", security=security
            )
            built.server.start()
            stops.append(lambda: built.server.stop(None))

            def get_space(channel: grpc.Channel, metadata: tuple) -> object:
                stub = compat.service_pb2_grpc().OracleStub(channel)
                return stub.GetSpace(pb2.GetSpaceRequest(), timeout=DEADLINE, metadata=metadata)

            return Served(built.port, get_space, compat.oracle_service_name())
        status = make_status_server(ledger, "127.0.0.1:0", security=security).start()
        stops.append(status.close)

        def get_status(channel: grpc.Channel, metadata: tuple) -> object:
            stub = status_grpc.StatusStub(channel)
            return stub.GetStatus(status_pb.GetStatusRequest(), timeout=DEADLINE, metadata=metadata)

        return Served(status.port, get_status, "tuner_service.status.v1.Status")

    yield start
    for stop in stops:
        stop()


def _tokens_file(tmp_path: Path, *tokens: str) -> Path:
    path = tmp_path / "accepted-tokens"
    path.write_text("# accepted while rotating\n" + "".join(f"{t}\n" for t in tokens))
    return path


def _auth(tmp_path: Path) -> ServerSecurity:
    """The chief's settings as a pod gets them: the current token plus a file of rotated ones."""
    env = {TOKEN_ENV: TOKEN, TOKENS_FILE_ENV: str(_tokens_file(tmp_path, ROTATED))}
    return ServerSecurity.from_env(env)


def _call(served: Served, client: ClientSecurity) -> grpc.RpcError | None:
    channel = client.channel(f"127.0.0.1:{served.port}")
    try:
        served.call(channel, client.metadata)
        return None
    except grpc.RpcError as err:
        return err
    finally:
        channel.close()


# -- tokens ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("service", SERVICES)
def test_a_call_without_a_token_is_refused_saying_the_token_is_missing(service, serve, tmp_path):
    err = _call(serve(service, _auth(tmp_path)), ClientSecurity())
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("missing bearer token")


@pytest.mark.parametrize("service", SERVICES)
def test_a_wrong_token_is_refused_as_invalid_and_never_echoed(service, serve, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="tuner_service")
    wrong = "wrong-token-Hh3x"
    err = _call(serve(service, _auth(tmp_path)), ClientSecurity(token=wrong))
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("invalid bearer token")
    assert wrong not in err.details()
    assert "refused" in caplog.text and wrong not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("token", [TOKEN, ROTATED], ids=["current", "rotated"])
def test_the_current_and_the_rotated_token_are_both_accepted(service, token, serve, tmp_path):
    assert _call(serve(service, _auth(tmp_path)), ClientSecurity(token=token)) is None


def test_the_event_stream_is_refused_without_a_token_too(serve, tmp_path):
    """A server-streaming call takes the same check as the unary ones."""
    served = serve("status", _auth(tmp_path))
    with StatusClient(f"127.0.0.1:{served.port}", timeout=5, security=ClientSecurity()) as client:
        with pytest.raises(StatusUnavailable, match="UNAUTHENTICATED: missing bearer token"):
            next(iter(client.events()))


def test_a_malformed_authorization_header_is_refused_as_such(serve, tmp_path):
    served = serve("oracle", _auth(tmp_path))
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    with pytest.raises(grpc.RpcError) as err:
        served.call(channel, (("authorization", TOKEN),))  # no "Bearer " scheme
    channel.close()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("malformed authorization metadata")


def test_tokens_file_changes_apply_without_a_restart(serve, tmp_path):
    """A rotated Secret: the kubelet rewrites the mounted file; the chief re-reads it."""
    path = _tokens_file(tmp_path, ROTATED)
    served = serve("status", ServerSecurity.from_env({TOKENS_FILE_ENV: str(path)}))
    assert _call(served, ClientSecurity(token=ROTATED)) is None
    newer = "newer-token-Lm2c"
    path.write_text(f"{newer}\n")
    deadline = time.monotonic() + 10  # the file is looked at once a second at most
    while _call(served, ClientSecurity(token=newer)) is not None:
        assert time.monotonic() < deadline, "the new token was never accepted"
        time.sleep(0.1)
    err = _call(served, ClientSecurity(token=ROTATED))
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED  # the old one is revoked


def test_a_tokens_file_that_does_not_exist_yet_refuses_everything(serve, tmp_path):
    """Auth named but no token readable: closed, never open."""
    security = ServerSecurity.from_env({TOKENS_FILE_ENV: str(tmp_path / "not-yet")})
    err = _call(serve("oracle", security), ClientSecurity(token="anything"))
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service", SERVICES)
def test_health_stays_open_without_a_token(service, serve, tmp_path):
    served = serve(service, _auth(tmp_path))
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", served.service_name):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=DEADLINE)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_without_auth_settings_every_call_is_served(serve):
    """The default: compatible with stock keras-tuner workers, which cannot send a token."""
    security = ServerSecurity.from_env({})
    assert security.tokens is None and security.tls is None
    assert _call(serve("oracle", security), ClientSecurity()) is None


# -- TLS -------------------------------------------------------------------------------------------
def _tls(pki: Pki, tmp_path: Path) -> ServerSecurity:
    env = {TOKEN_ENV: TOKEN, TLS_CERT_ENV: str(pki.cert), TLS_KEY_ENV: str(pki.key)}
    return ServerSecurity.from_env(env)


@pytest.mark.parametrize("service", SERVICES)
def test_tls_with_the_right_ca_is_served(service, serve, pki, tmp_path):
    assert _call(serve(service, _tls(pki, tmp_path)), ClientSecurity(token=TOKEN, ca=pki.ca)) is None


@pytest.mark.parametrize("service", SERVICES)
def test_tls_with_a_ca_that_did_not_sign_the_certificate_fails(service, serve, pki, tmp_path):
    err = _call(serve(service, _tls(pki, tmp_path)), ClientSecurity(token=TOKEN, ca=pki.other_ca))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", SERVICES)
def test_plaintext_against_the_tls_port_fails(service, serve, pki, tmp_path):
    err = _call(serve(service, _tls(pki, tmp_path)), ClientSecurity(token=TOKEN))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_signed_by_the_client_ca(serve, pki, tmp_path):
    env = {TLS_CERT_ENV: str(pki.cert), TLS_KEY_ENV: str(pki.key), TLS_CLIENT_CA_ENV: str(pki.ca)}
    served = serve("oracle", ServerSecurity.from_env(env))
    assert _call(served, ClientSecurity(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)) is None
    err = _call(served, ClientSecurity(ca=pki.ca))  # no client certificate
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    from_env = ClientSecurity.from_env(
        {
            TLS_CA_ENV: str(pki.ca),
            TLS_CLIENT_CERT_ENV: str(pki.client_cert),
            TLS_CLIENT_KEY_ENV: str(pki.client_key),
        }
    )
    assert _call(served, from_env) is None


def test_the_server_name_can_differ_from_the_dialled_host(serve, pki, tmp_path):
    """After a port-forward the CLI dials localhost; the certificate names the Service."""
    served = serve("status", _tls(pki, tmp_path))
    ok = ClientSecurity(token=TOKEN, ca=pki.ca, server_name="localhost")
    wrong = ClientSecurity(token=TOKEN, ca=pki.ca, server_name="chief.elsewhere.svc")
    assert _call(served, ok) is None
    err = _call(served, wrong)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE


def test_bad_tls_settings_are_one_clear_error(pki, tmp_path):
    with pytest.raises(SecurityConfigError, match=f"set both {TLS_CERT_ENV} and {TLS_KEY_ENV}"):
        ServerSecurity.from_env({TLS_CERT_ENV: str(pki.cert)})
    with pytest.raises(SecurityConfigError, match=f"{TLS_KEY_ENV}=.*cannot read it"):
        ServerSecurity.from_env({TLS_CERT_ENV: str(pki.cert), TLS_KEY_ENV: str(tmp_path / "missing.key")})
    with pytest.raises(SecurityConfigError, match=f"{TLS_CLIENT_CA_ENV} needs TLS"):
        ServerSecurity.from_env({TLS_CLIENT_CA_ENV: str(pki.ca)})
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(SecurityConfigError, match=f"{TLS_CERT_ENV}=.*not a PEM file"):
        ServerSecurity.from_env({TLS_CERT_ENV: str(tmp_path / "junk.crt"), TLS_KEY_ENV: str(pki.key)})


def test_a_token_without_tls_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="tuner_service.auth"):
        ServerSecurity.from_env({TOKEN_ENV: TOKEN})
    assert "without TLS" in caplog.text and TOKEN not in caplog.text


# -- our clients -----------------------------------------------------------------------------------
def test_our_worker_client_over_tls_with_a_token_from_the_environment(serve, pki, tmp_path, monkeypatch):
    served = serve("oracle", _tls(pki, tmp_path))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(TLS_CA_ENV, str(pki.ca))
    client = ServiceOracleClient(_oracle(tmp_path / "worker"), f"127.0.0.1:{served.port}", "worker-0")
    try:
        assert "units" in client.get_space().values
    finally:
        client.close()


def test_our_worker_client_with_a_wrong_token_stops_at_once(serve, tmp_path):
    """Not retried until chief_deadline: a wrong token does not heal."""
    served = serve("oracle", _auth(tmp_path))
    client = ServiceOracleClient(
        _oracle(tmp_path / "worker"),
        f"127.0.0.1:{served.port}",
        "worker-0",
        chief_deadline=60,
        security=ClientSecurity(token="stale"),
    )
    start = time.monotonic()
    with pytest.raises(NotAuthorized, match="UNAUTHENTICATED: invalid bearer token"):
        client.create_trial("worker-0")
    client.close()
    assert time.monotonic() - start < 20  # at once, not retried until the 60 s chief_deadline


def test_status_client_and_cli_report_the_refusal(serve, tmp_path):
    served = serve("status", _auth(tmp_path))
    address = f"127.0.0.1:{served.port}"
    with StatusClient(address, timeout=5, security=ClientSecurity()) as client:
        with pytest.raises(StatusUnavailable, match="UNAUTHENTICATED: missing bearer token"):
            client.status()
    with StatusClient(address, timeout=5, security=ClientSecurity(token=ROTATED)) as client:
        assert client.status().study == "secure"
    env = {**os.environ, "PYTHONPATH": str(REPO), TOKEN_ENV: "wrong-cli-token-Q9"}
    proc = subprocess.run(
        [sys.executable, "-m", "tuner_service", "status", "--chief", address, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    assert "UNAUTHENTICATED: invalid bearer token" in proc.stderr
    assert "wrong-cli-token-Q9" not in proc.stdout + proc.stderr


# -- a stock keras-tuner worker ----------------------------------------------------------------------
def test_a_stock_keras_tuner_worker_is_refused_with_the_reason(serve, tmp_path, monkeypatch):
    """keras-tuner's own distributed mode, unmodified: its OracleClient cannot send a token."""
    served = serve("oracle", _auth(tmp_path))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "stock-worker-0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(served.port))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # in its environment, but stock code never sends it
    tuner = keras_tuner.RandomSearch(
        SleepyHyperModel(),
        objective="val_accuracy",
        max_trials=3,
        directory=str(tmp_path / "stock"),
        project_name="p",
    )
    assert type(tuner.oracle).__name__ == "OracleClient"  # keras-tuner's worker side
    x = np.zeros((8, 1), "float32")
    with pytest.raises(grpc.RpcError) as err:
        tuner.search(x, x, validation_data=(x, x), epochs=1, verbose=0)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("missing bearer token: this chief requires")


def test_a_renewed_certificate_is_served_without_a_restart(serve, pki, tmp_path):
    """cert-manager renews the Secret in place: the next handshake gets the new certificate."""
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.cert, live / "tls.crt")
    shutil.copy(pki.key, live / "tls.key")
    env = {TOKEN_ENV: TOKEN, TLS_CERT_ENV: str(live / "tls.crt"), TLS_KEY_ENV: str(live / "tls.key")}
    served = serve("status", ServerSecurity.from_env(env))
    assert _call(served, ClientSecurity(token=TOKEN, ca=pki.ca)) is None
    renewed = make_pki(tmp_path / "renewed")  # another CA's certificate
    shutil.copy(renewed.key, live / "tls.key.new")
    shutil.copy(renewed.cert, live / "tls.crt.new")
    (live / "tls.key.new").replace(live / "tls.key")
    (live / "tls.crt.new").replace(live / "tls.crt")
    deadline = time.monotonic() + 10
    while _call(served, ClientSecurity(token=TOKEN, ca=renewed.ca)) is not None:
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.1)


def test_bad_tls_settings_stop_the_chief_with_exit_2_before_anything_loads(pki, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"name: tls-check\nmodel: mlp\ndirectory: {tmp_path / 'studies'}\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KERASTUNER_ORACLE_PORT": "1",
        TLS_CERT_ENV: str(pki.cert),
        TLS_KEY_ENV: str(tmp_path / "no.key"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tuner_service", "chief", "-c", str(study)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{TLS_KEY_ENV}=" in proc.stderr and "cannot read it" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "studies").exists()  # nothing written


def test_the_token_never_reaches_the_shared_storage_or_the_log(tmp_path, monkeypatch, caplog):
    """A whole (tiny) search with auth on: the chief's files and log lines never hold a token."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    spec = validate(study_dict(tmp_path, name="secret-free", model="bench.sleepy:SleepyHyperModel"))
    tuner = build_tuner(spec, SleepyHyperModel())
    tuner.save()
    chief = Chief(spec, tuner.oracle, address="127.0.0.1:0", linger=5.0, security=_auth(tmp_path))
    status = make_status_server(chief.ledger, "127.0.0.1:0", security=chief.security).start()
    endpoints.write(spec.project_dir, "127.0.0.1", status_port=status.port)
    chief.start()
    client = ServiceOracleClient(
        build_oracle(spec), f"127.0.0.1:{chief.port}", "worker-0", security=ClientSecurity(token=TOKEN)
    )
    for _ in range(2):
        trial = client.create_trial("worker-0")
        client.report_progress(trial.trial_id, {"val_accuracy": 0.5}, step=0)
        client.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        trial.status = "COMPLETED"
        client.end_trial(trial)
    assert client.create_trial("worker-0").status == "STOPPED"
    with StatusClient(f"127.0.0.1:{status.port}", security=ClientSecurity(token=ROTATED)) as sc:
        answer = str(sc.status()) + str(sc.trials())
    client.close()
    chief.shutdown(chief.wait())
    status.close()
    assert "COMPLETED" in answer and TOKEN not in answer and ROTATED not in answer
    files = [p for p in spec.project_dir.rglob("*") if p.is_file()]
    assert {"service_state.json", "oracle.json", "endpoints.json"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data and ROTATED.encode() not in data, path
    assert TOKEN not in caplog.text and ROTATED not in caplog.text


# -- the chart's mutual TLS wiring, run ---------------------------------------------------------------
def _secret_data(docs: list[dict], pki: Pki) -> dict[str, dict[str, bytes]]:
    """Every Secret the pods mount: the chart's own (the token) and the two kubernetes.io/tls
    Secrets a cert-manager CA issuer would make: the chief's and the workers' client one."""
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in d.get("data", {}).items()}
        for d in by_kind(docs, "Secret")
    }
    ca = pki.ca.read_bytes()
    secrets["chief-tls"] = {"tls.crt": pki.cert.read_bytes(), "tls.key": pki.key.read_bytes(), "ca.crt": ca}
    secrets["worker-client-tls"] = {
        "tls.crt": pki.client_cert.read_bytes(),
        "tls.key": pki.client_key.read_bytes(),
        "ca.crt": ca,
    }
    return secrets


def _pod_security_env(spec: dict, secrets: dict[str, dict[str, bytes]], root: Path) -> dict[str, str]:
    """The container's ``TUNER_SERVICE_*`` env as the pod sees it: each Secret volume's items
    written into a folder (with the volume's mode) and every path under a mount point mapped to
    that folder, as the kubelet would mount it. A path that no mount serves stays unmapped."""
    [container] = spec["containers"]
    volumes = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        if mount["name"] not in volumes:
            continue
        ref, folder = volumes[mount["name"]], root / mount["name"]
        folder.mkdir(parents=True)
        for item in ref["items"]:
            if item["key"] not in secrets[ref["secretName"]]:
                assert ref.get("optional"), f"Secret {ref['secretName']} has no key {item['key']}"
                continue
            path = folder / item["path"]
            path.write_bytes(secrets[ref["secretName"]][item["key"]])
            path.chmod(ref["defaultMode"])
        mounts[mount["mountPath"]] = folder

    def mapped(value: str) -> str:
        parts = value.split(":")  # TUNER_SERVICE_AUTH_TOKENS_FILE lists several files
        for at, folder in mounts.items():
            parts = [str(folder) + p[len(at) :] if p.startswith(at + "/") else p for p in parts]
        return ":".join(parts)

    return {
        e["name"]: mapped(e["value"])
        for e in container["env"]
        if e["name"].startswith("TUNER_SERVICE_") and "value" in e
    }


@pytest.mark.k8s
def test_the_charts_mutual_tls_serves_its_workers_and_refuses_a_pod_without_a_client_certificate(
    serve, pki, tmp_path, monkeypatch
):
    """The env and files the chart gives the chief and a worker with tls.clientAuth on, run over
    real gRPC: the worker so configured is served on both ports; a pod that has the token and the
    CA but no client certificate, or one from another CA, is refused at the handshake."""
    docs = render(
        "--set", "auth.enabled=true", "--set", f"auth.token={TOKEN}",
        "--set", "tls.enabled=true", "--set", "tls.secretName=chief-tls",
        "--set", "tls.clientAuth.enabled=true", "--set", "tls.clientAuth.secretName=worker-client-tls",
    )  # fmt: skip
    secrets = _secret_data(docs, pki)
    chief_env = _pod_security_env(job(docs, "chief")["spec"]["template"]["spec"], secrets, tmp_path / "chief")
    worker_env = _pod_security_env(
        job(docs, "worker")["spec"]["template"]["spec"], secrets, tmp_path / "worker"
    )
    for env in (chief_env, worker_env):  # every path the chart names is a file it mounts
        assert not [v for v in env.values() if "/var/run/secrets/" in v], env
    assert Path(chief_env[TLS_CLIENT_CA_ENV]).read_bytes() == pki.ca.read_bytes()
    assert not {TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV} & set(chief_env)  # no client key in the chief
    assert Path(worker_env[TLS_CLIENT_KEY_ENV]).read_bytes() == pki.client_key.read_bytes()

    security = ServerSecurity.from_env(chief_env)
    assert security.tls is not None and security.tls.client_ca is not None and security.tokens is not None
    for env_name, value in worker_env.items():  # the worker process's environment, as in its pod
        monkeypatch.setenv(env_name, value)
    worker = ClientSecurity.from_env()
    stranger = ClientSecurity(token=TOKEN, ca=pki.ca)  # a pod holding the token, no certificate
    other = make_pki(tmp_path / "other")
    forged = ClientSecurity(token=TOKEN, ca=pki.ca, cert=other.client_cert, key=other.client_key)
    for service in SERVICES:
        served = serve(service, security)
        assert _call(served, worker) is None, service
        for refused in (stranger, forged):
            err = _call(served, refused)
            assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, service
    # Our worker's client, built as run_worker builds it (security from the environment).
    served = serve("oracle", security)
    client = ServiceOracleClient(_oracle(tmp_path / "w"), f"127.0.0.1:{served.port}", "worker-0")
    try:
        assert "units" in client.get_space().values
    finally:
        client.close()
