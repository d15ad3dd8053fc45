"""charts/files/alerts.yaml: valid for promtool, unit-tested by tests/monitoring/alerts_test.yaml,
and every alert complete: severity, summary, description, a runbook section, known metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.promql import (
    ALERTS_FILE,
    ROOT,
    alert_rules,
    exported_names,
    metric_names,
    runbook_anchors,
)

ALERTS_TEST_FILE = Path(__file__).with_name("alerts_test.yaml")
ALERT_NAMES = {
    "PoUWNodeDown",
    "PoUWChainStalled",
    "PoUWPeersLow",
    "PoUWBlocksRejectedHigh",
    "PoUWAttackDetected",
    "PoUWTaskStalled",
    "PoUWOperatorReconcileErrors",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return subprocess.run(
        [binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules_file() -> None:
    result = promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    import yaml

    tests = yaml.safe_load(ALERTS_TEST_FILE.read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == ALERT_NAMES
    assert quiet == ALERT_NAMES


def test_the_alerts_are_the_contracts() -> None:
    assert {rule["alert"] for rule in alert_rules()} == ALERT_NAMES


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_is_complete(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning")
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    anchor = rule["alert"].lower()
    assert annotations["runbook_url"].endswith(f"docs/runbook.md#{anchor}")
    assert anchor in runbook_anchors(), f"docs/runbook.md has no section {rule['alert']}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_reads_metrics_that_are_exported(rule: dict[str, Any]) -> None:
    used = metric_names(rule["expr"])
    assert used, rule["expr"]
    assert used <= exported_names(), f"not exported: {sorted(used - exported_names())}"


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y(z)"}[5m] offset 1h)))'
        " > 1e3 and on (x) b:c unless bool d"
    )
    assert metric_names(expr) == {"a_bucket", "b:c", "d"}
