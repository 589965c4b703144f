"""checkov over every rendered preset: zero failed checks; the only skips are the argued ones
in k8s/checkov.yaml."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.helpers import PRESETS, REPO, preset_args, render_text, require_tool, run

pytestmark = pytest.mark.k8s

CONFIG = REPO / "k8s" / "checkov.yaml"
ARGUED_SKIPS = {"CKV_K8S_43", "CKV_K8S_38", "CKV_DOCKER_2"}


def test_skips_are_few_and_argued():
    config = yaml.safe_load(CONFIG.read_text())
    assert set(config["skip-check"]) == ARGUED_SKIPS
    text = CONFIG.read_text()
    for check in ARGUED_SKIPS:
        # Each skip has its reason as a comment right above it.
        before = text.split(f"- {check}", 1)[0].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), check


def test_checkov_zero_failures(tmp_path):
    checkov = require_tool("checkov")
    for preset in PRESETS:
        (tmp_path / f"{preset}.yaml").write_text(render_text(*preset_args(preset)))
    shutil.copy(REPO / "docker" / "Dockerfile", tmp_path / "Dockerfile")
    proc = run(
        [
            checkov,
            "--config-file",
            str(CONFIG),
            "--directory",
            str(tmp_path),
            "--output",
            "json",
            "--skip-download",
        ],
        check=False,
    )
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    summary = {k: sum(r["summary"][k] for r in reports) for k in ("passed", "failed")}
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert summary["failed"] == 0 and summary["passed"] > 100
    assert proc.returncode == 0, proc.stderr


def test_dockerfile_shape():
    """One Dockerfile, two variants, non-root, tini in front of `tuner-service`."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "ARG VARIANT=gpu" in text
    assert 'gpu/amd64) tensorflow="tensorflow[and-cuda]' in text
    assert 'cpu/amd64) tensorflow="tensorflow-cpu' in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["tini", "--"]' in text
    assert 'CMD ["tuner-service", "--help"]' in text
    # build stage, runtime base, its cpu and gpu variants, the final stage.
    assert text.count("\nFROM ") == 5
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :] and "!tuner_service/" in ignore
    assert "!docker/constraints-*.txt" in ignore


def test_checkov_on_the_permissions_init_container(tmp_path):
    """persistence.fixPermissions: zero failures; the one exception (CAP_CHOWN added) is skipped
    inline on the two Jobs, with its reason."""
    checkov = require_tool("checkov")
    (tmp_path / "fix.yaml").write_text(render_text("--set", "persistence.fixPermissions=true"))
    config = tmp_path / "checkov.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(CONFIG.read_text()), "quiet": False}))
    proc = run(
        [checkov, "--config-file", str(config), "--framework", "kubernetes", "--directory", str(tmp_path)]
        + ["--output", "json", "--skip-download"],
        check=False,
    )
    report = json.loads(proc.stdout)
    assert not report["results"]["failed_checks"], [c["check_id"] for c in report["results"]["failed_checks"]]
    skipped = report["results"]["skipped_checks"]
    assert {(c["check_id"], c["resource"]) for c in skipped} == {
        ("CKV_K8S_25", "Job.studies.test-tuner-service-chief"),
        ("CKV_K8S_25", "Job.studies.test-tuner-service-worker"),
    }
    assert all("CAP_CHOWN" in c["check_result"]["suppress_comment"] for c in skipped)
