"""charts/files/dashboard.json: a Grafana dashboard whose every panel queries metrics that exist,
in PromQL that Prometheus parses."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.promql import DASHBOARD_FILE, exported_names, metric_names

REQUIRED = {
    "pouw_chain_height",
    "pouw_blocks_accepted_total",
    "pouw_peers",
    "pouw_task_loss",
    "pouw_task_accuracy",
    "pouw_blocks_rejected_total",
    "pouw_attacks_detected_total",
    "pouw_operator_reconcile_total",
}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def exprs() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def test_it_is_a_dashboard_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_has_a_query_and_a_place() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["title"] and panel["targets"], panel
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_every_query_reads_metrics_that_are_exported() -> None:
    used = set().union(*(metric_names(expr) for expr in exprs()))
    assert used <= exported_names(), f"not exported: {sorted(used - exported_names())}"
    assert used >= REQUIRED, f"no panel shows {sorted(REQUIRED - used)}"


def test_every_query_parses(tmp_path: Path) -> None:
    """Each expression, with Grafana's variables filled in, as a recording rule for promtool."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    rules = []
    for index, query in enumerate(exprs()):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
