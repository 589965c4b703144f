"""values.schema.json rejects bad values before anything reaches a cluster, naming the value."""

from __future__ import annotations

import json

import pytest

from tests.helpers import CHART, PRESETS, preset_args, require_tool, run

pytestmark = pytest.mark.k8s

# (helm arguments, text the error must contain)
BAD_VALUES = [
    (["--set", "worker.replicas=0"], "at '/worker/replicas': minimum: got 0, want 1"),
    (["--set", "worker.replicas=-3"], "at '/worker/replicas': minimum: got -3, want 1"),
    (["--set-string", "worker.replicas=two"], "at '/worker/replicas': got string, want integer"),
    (
        ["--set", "study.tuner.type=grid"],
        "at '/study/tuner/type': value must be one of 'bayesian', 'random', 'hyperband'",
    ),
    (["--set", "study.tuner=null"], "at '/study': missing property 'tuner'"),
    (["--set", "study.model=my model"], "at '/study/model'"),
    (["--set", "study.name=My_Study"], "at '/study/name'"),
    (["--set", "study.tuner.factor=1"], "at '/study/tuner/factor': minimum: got 1, want 2"),
    (["--set", "study.data.validation_split=1.5"], "at '/study/data/validation_split'"),
    (["--set", "study.max_trials=0"], "at '/study/max_trials': minimum: got 0, want 1"),
    (["--set", "study.epochs=0"], "at '/study/epochs': minimum: got 0, want 1"),
    (["--set", "study.directory=relative/path"], "at '/study/directory'"),
    (["--set", "study.bogus=1"], "at '/study': additional properties 'bogus' not allowed"),
    (["--set", "study.metrics_port=1"], "additional properties 'metrics_port' not allowed"),
    (["--set", "worker.resources.limits.memory=lots"], "at '/worker/resources/limits/memory'"),
    (["--set", "chief.resources.requests.cpu=-1"], "at '/chief/resources/requests/cpu'"),
    (["--set", "worker.resources.limits=null"], "at '/worker/resources': missing property 'limits'"),
    (
        ["--set", "worker.resources.requests.memory=null"],
        "at '/worker/resources/requests': missing property 'memory'",
    ),
    (
        ["--set", "worker.resources.request.cpu=1"],
        "at '/worker/resources': additional properties 'request' not allowed",
    ),
    (["--set", "worker.gpu.count=0"], "at '/worker/gpu/count': minimum: got 0, want 1"),
    (["--set", "worker.gpu.enabled=yes-please"], "at '/worker/gpu/enabled': got string, want boolean"),
    (["--set", "chief.ports.oracle=70000"], "at '/chief/ports/oracle': maximum: got 70,000, want 65,535"),
    (["--set", "metrics.port=0"], "at '/metrics/port': minimum: got 0, want 1"),
    (
        ["--set", "image.pullPolicy=Sometimes"],
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
    ),
    (["--set", "image.variant=tpu"], "at '/image/variant': value must be one of '', 'gpu', 'cpu'"),
    (["--set", "image.digest=latest"], "at '/image/digest'"),
    (["--set", "persistence.accessModes[0]=ReadWriteSometimes"], "at '/persistence/accessModes/0'"),
    (["--set", "persistence.size=big"], "at '/persistence/size'"),
    (["--set", "metrics.serviceMonitor.interval=often"], "at '/metrics/serviceMonitor/interval'"),
    (["--set", "service.type=ExternalName"], "at '/service/type'"),
    (["--set", "workers=4"], "additional properties 'workers' not allowed"),
    (["--set", "tls.secret=x"], "at '/tls': additional properties 'secret' not allowed"),
    (
        ["--set", "tls.clientAuth.secret=x"],
        "at '/tls/clientAuth': additional properties 'secret' not allowed",
    ),
    (["--set", "tls.clientAuth.caKey=a/b"], "at '/tls/clientAuth/caKey'"),
    (["--set", "auth.acceptedTokens[0]=two words"], "at '/auth/acceptedTokens/0'"),
    (["--set", "chief.avoidSpot=maybe"], "at '/chief/avoidSpot': got string, want boolean"),
    (["--set-json", 'chief.spotNodeLabels={"spot": []}'], "at '/chief/spotNodeLabels/spot'"),
    (["--set", "chief.terminationGracePeriodSeconds=-1"], "at '/chief/terminationGracePeriodSeconds'"),
    (["--set", "chief.activeDeadlineSeconds=0"], "at '/chief/activeDeadlineSeconds': minimum: got 0, want 1"),
    (
        ["--set", "worker.activeDeadlineSeconds=0"],
        "at '/worker/activeDeadlineSeconds': minimum: got 0, want 1",
    ),
    (["--set", "worker.successPolicy=all"], "at '/worker/successPolicy': got string, want boolean"),
    (["--set", "priorityClass.value=2000000000"], "at '/priorityClass/value'"),
    (["--set", "priorityClass.preemptionPolicy=Always"], "at '/priorityClass/preemptionPolicy'"),
    (
        ["--set", "persistence.fixPermissions=yes"],
        "at '/persistence/fixPermissions': got string, want boolean",
    ),
    (["--set", "userCode.package=my-models"], "at '/userCode/package'"),
    (["--set-json", 'userCode.items=[{"key": "a.py", "path": "/abs/a.py"}]'], "at '/userCode/items/0/path'"),
    (["--set", "image.initProcess=tini"], "at '/image/initProcess': got string, want array"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_schema_rejects_bad_values(args, message):
    helm = require_tool("helm")
    proc = run([helm, "template", "x", str(CHART), *args], check=False)
    assert proc.returncode != 0, f"accepted: {args}"
    assert message in proc.stderr, proc.stderr


# Rules the JSON schema cannot express are checked by the templates, with the same clarity.
TEMPLATE_CHECKS = [
    (
        ["--set", "metrics.port=8000"],
        "metrics.port must differ from chief.ports.oracle and chief.ports.status",
    ),
    (["--set", "chief.ports.status=8000"], "chief.ports.oracle and chief.ports.status must differ"),
    (
        ["--set", "persistence.mountPath=/mnt"],
        "study.directory (/data/studies) must lie under persistence.mountPath (/mnt)",
    ),
    (["--set", "tls.enabled=true"], "tls.secretName is required with tls.enabled"),
    (
        ["--set", "tls.clientAuth.enabled=true", "--set", "tls.clientAuth.secretName=client"],
        "tls.clientAuth.enabled needs tls.enabled",
    ),
    (
        [
            "--set",
            "tls.enabled=true",
            "--set",
            "tls.secretName=chief",
            "--set",
            "tls.clientAuth.enabled=true",
        ],
        "tls.clientAuth.secretName is required with tls.clientAuth.enabled",
    ),
]


@pytest.mark.parametrize(("args", "message"), TEMPLATE_CHECKS, ids=[" ".join(a) for a, _ in TEMPLATE_CHECKS])
def test_template_checks(args, message):
    helm = require_tool("helm")
    proc = run([helm, "template", "x", str(CHART), *args], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_pass_the_schema(preset):
    helm = require_tool("helm")
    run([helm, "template", "x", str(CHART), *preset_args(preset)])


def test_schema_is_strict_at_every_level():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values_keys = set(schema["properties"])
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == values_keys  # every value has a schema entry, and vice versa
    for key, sub in schema["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, key
            assert set(values[key]) <= set(sub["properties"]), key


# Study keys the chart sets itself from other values (ports from chief.ports / metrics.port).
CHART_MANAGED_STUDY_KEYS = {"metrics_port", "status_port"}


def test_chart_study_schema_covers_every_study_key() -> None:
    """A key users can put in a study file must also be settable through `study:` values."""
    from tuner_service.spec import StudySpec

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["study"]
    in_chart = set(schema["properties"])
    in_spec = set(StudySpec.model_fields) - CHART_MANAGED_STUDY_KEYS
    assert in_chart == in_spec, f"only in spec: {in_spec - in_chart}; only in chart: {in_chart - in_spec}"
