"""The only place where tuner-service talks to the Kubernetes API (official `kubernetes` client).

Best effort: without a cluster, without credentials or without permission it logs one
warning and returns ``False``; it never raises.

* :func:`publish_event` - the chief records Kubernetes Events about the search (started,
  finished, failed) on its own pod, so ``kubectl describe pod`` / ``kubectl get events`` show
  them. The pod is named by the downward-API variables ``POD_NAME``, ``POD_NAMESPACE`` and
  ``POD_UID`` that the Helm chart sets; the chart's Role grants exactly ``create events``.

Example::

    >>> from tuner_service import kube
    >>> kube.publish_event(kube.SEARCH_STARTED, "max_trials=20, 4 workers")  # doctest: +SKIP
    True

The ``kubernetes`` package is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: Event reasons the chief publishes (CamelCase, as Kubernetes reasons are).
SEARCH_STARTED = "SearchStarted"
SEARCH_RESUMED = "SearchResumed"
SEARCH_FINISHED = "SearchFinished"
SEARCH_FAILED = "SearchFailed"

#: ``reportingComponent`` / ``source.component`` of our events.
COMPONENT = "tuner-service"

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    """Log a warning once per process and key (a missing cluster is not news twice)."""
    if key not in _warned:
        _warned.add(key)
        log.log(level, message, *args)


def load_api_client() -> Any | None:
    """An ``ApiClient`` from the in-cluster config in a pod, else from the kubeconfig.

    Returns ``None`` (after one logged warning) when the client library is missing or no
    configuration can be loaded.
    """
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:  # pragma: no cover - the package is a dependency
        _warn_once("import", "kubernetes client not installed; Kubernetes features are off")
        return None
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        _warn_once("config", "no Kubernetes configuration (%s); Kubernetes features are off", exc)
        return None
    return client.ApiClient()


def _core_v1(api: Any | None) -> Any | None:
    if api is not None:
        return api
    api_client = load_api_client()
    if api_client is None:
        return None
    from kubernetes import client

    return client.CoreV1Api(api_client)


def current_namespace() -> str:
    """The namespace to use when none is given: the pod's, then the kubeconfig context's."""
    ns = os.environ.get("POD_NAMESPACE")
    if ns:
        return ns
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as fh:
            return fh.read().strip() or "default"
    except OSError:
        pass
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig at all is a normal case here
        return "default"


def _api_error(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"


def publish_event(
    reason: str,
    message: str,
    *,
    event_type: str = "Normal",
    pod_name: str | None = None,
    namespace: str | None = None,
    pod_uid: str | None = None,
    api: Any | None = None,
) -> bool:
    """Record a Kubernetes Event on this pod (or the one named); True if it was created.

    ``pod_name`` / ``namespace`` / ``pod_uid`` default to ``POD_NAME`` / ``POD_NAMESPACE`` /
    ``POD_UID``; outside a pod (no ``POD_NAME``) nothing is sent. ``api`` is a ``CoreV1Api``
    (tests pass a fake). Never raises: failures are logged as warnings.
    """
    pod_name = pod_name or os.environ.get("POD_NAME")
    if not pod_name:
        # Outside Kubernetes (a local `tuner-service run`) that is expected, not a problem.
        _warn_once("pod", "POD_NAME not set (not in a pod); Kubernetes events are off", level=logging.DEBUG)
        return False
    namespace = namespace or current_namespace()
    pod_uid = pod_uid or os.environ.get("POD_UID") or None
    core = _core_v1(api)
    if core is None:
        return False
    body = _event_body(reason, message, event_type, pod_name, namespace, pod_uid)
    try:
        core.create_namespaced_event(namespace=namespace, body=body)
    except Exception as exc:  # noqa: BLE001 - ApiException, urllib3 errors: all non-fatal
        _warn_once(
            f"event:{_api_error(exc)}",
            "could not record Kubernetes event %s on pod %s/%s: %s",
            reason,
            namespace,
            pod_name,
            _api_error(exc),
        )
        return False
    return True


def _event_body(
    reason: str, message: str, event_type: str, pod_name: str, namespace: str, pod_uid: str | None
) -> Any:
    from kubernetes import client

    now = _dt.datetime.now(_dt.timezone.utc)
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{pod_name}.", namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version="v1", kind="Pod", name=pod_name, namespace=namespace, uid=pod_uid
        ),
        reason=reason,
        message=message[:1024],
        type=event_type,
        source=client.V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT,
        reporting_instance=pod_name,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
