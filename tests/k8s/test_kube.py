"""tuner_service.kube against a fake CoreV1Api: it calls what the chart's RBAC grants and
degrades to a logged warning (never an exception) without a cluster or permission."""

from __future__ import annotations

import logging

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tuner_service import kube

pytestmark = pytest.mark.k8s


class FakeCoreV1:
    """Records calls; optionally fails like the API server does."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.calls: list[tuple[str, dict]] = []

    def create_namespaced_event(self, namespace, body):
        self.calls.append(("create_namespaced_event", {"namespace": namespace, "body": body}))
        if self.error:
            raise self.error
        return body


@pytest.fixture(autouse=True)
def _pod_env(monkeypatch):
    kube._warned.clear()
    monkeypatch.setenv("POD_NAME", "mnist-tuner-service-chief-x7k2p")
    monkeypatch.setenv("POD_NAMESPACE", "studies")
    monkeypatch.setenv("POD_UID", "0f6b2c8e-uid")


def test_publish_event_creates_core_v1_event_on_own_pod():
    api = FakeCoreV1()
    assert kube.publish_event(kube.SEARCH_STARTED, "max_trials=20", api=api) is True
    [(name, kwargs)] = api.calls
    assert name == "create_namespaced_event"
    assert kwargs["namespace"] == "studies"
    body = client.ApiClient().sanitize_for_serialization(kwargs["body"])
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "mnist-tuner-service-chief-x7k2p",
        "namespace": "studies",
        "uid": "0f6b2c8e-uid",
    }
    assert body["reason"] == "SearchStarted"
    assert body["type"] == "Normal"
    assert body["message"] == "max_trials=20"
    assert body["metadata"]["generateName"] == "mnist-tuner-service-chief-x7k2p."
    assert body["reportingComponent"] == "tuner-service"
    assert body["count"] == 1 and body["firstTimestamp"] and body["lastTimestamp"]


def test_publish_event_warning_type_and_long_message_truncated():
    api = FakeCoreV1()
    assert kube.publish_event(kube.SEARCH_FAILED, "x" * 5000, event_type="Warning", api=api)
    body = api.calls[0][1]["body"]
    assert body.type == "Warning"
    assert len(body.message) == 1024


@pytest.mark.parametrize("status", [403, 404, 500])
def test_publish_event_api_error_is_a_warning_not_a_crash(status, caplog):
    api = FakeCoreV1(error=ApiException(status=status, reason="Forbidden"))
    with caplog.at_level(logging.WARNING, logger="tuner_service.kube"):
        assert kube.publish_event(kube.SEARCH_FINISHED, "done", api=api) is False
    assert f"HTTP {status}" in caplog.text


def test_publish_event_network_error_is_a_warning(caplog):
    api = FakeCoreV1(error=ConnectionRefusedError("no route"))
    with caplog.at_level(logging.WARNING, logger="tuner_service.kube"):
        assert kube.publish_event(kube.SEARCH_FINISHED, "done", api=api) is False
    assert "ConnectionRefusedError" in caplog.text


def test_publish_event_outside_a_pod_sends_nothing(monkeypatch, caplog):
    monkeypatch.delenv("POD_NAME")
    api = FakeCoreV1()
    with caplog.at_level(logging.DEBUG, logger="tuner_service.kube"):
        assert kube.publish_event(kube.SEARCH_STARTED, "x", api=api) is False
        assert kube.publish_event(kube.SEARCH_STARTED, "x", api=api) is False
    assert api.calls == []
    # Said once, and only at debug level: a local run is not in a pod, and that is fine.
    [record] = [r for r in caplog.records if "POD_NAME not set" in r.getMessage()]
    assert record.levelno == logging.DEBUG


def test_no_cluster_configuration_degrades_to_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with caplog.at_level(logging.WARNING, logger="tuner_service.kube"):
        assert kube.load_api_client() is None
        assert kube.publish_event(kube.SEARCH_STARTED, "x") is False
    assert "no Kubernetes configuration" in caplog.text


def test_in_cluster_without_token_degrades_to_warning(monkeypatch, caplog):
    # A pod with automountServiceAccountToken: false (our workers): in-cluster config fails.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with caplog.at_level(logging.WARNING, logger="tuner_service.kube"):
        assert kube.publish_event(kube.SEARCH_STARTED, "x") is False
    assert "no Kubernetes configuration" in caplog.text


def test_chart_role_grants_exactly_what_kube_calls(chart_render):
    """The chief's Role = the API calls this module makes in the pod (create events)."""
    docs = chart_render()
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    jobs = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in docs if d["kind"] == "Job"}
    assert jobs["chief"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert jobs["worker"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    off = chart_render("--set", "events.enabled=false")
    assert not [d for d in off if d["kind"] in ("Role", "RoleBinding")]
    [chief] = [d for d in off if d["kind"] == "Job" and d["metadata"]["name"].endswith("-chief")]
    assert chief["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
