"""The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`)."""

from __future__ import annotations

import subprocess

import yaml

from tests.helpers import ALERT_TESTS, ALERTS, require_tool

ALERT_NAMES = {
    "TunerServiceSearchStalled",
    "TunerServiceWorkerMissing",
    "TunerServiceTrialFailureRatioHigh",
    "TunerServiceChiefDown",
}


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_every_alert_has_unit_tests_and_they_pass() -> None:
    promtool = require_tool("promtool")
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert alerts == ALERT_NAMES
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    for name in alerts:
        cases = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases), f"{name}: no test where it fires"
        assert any(not c["exp_alerts"] for c in cases), f"{name}: no test where it stays quiet"
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
