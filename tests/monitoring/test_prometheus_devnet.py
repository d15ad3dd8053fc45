"""A real Prometheus (Debian's `prometheus`) scrapes a real devnet and evaluates
charts/files/alerts.yaml, the file the chart ships, unchanged.

The test stops a miner and waits for PoUWNodeDown to go pending or firing for that node
through Prometheus's HTTP API. With the file's `for: 2m` the alert is pending a few seconds
after the kill (scrapes and evaluations run every second here); `for` itself is covered by
the promtool unit tests (tests/monitoring/alerts_test.yaml), so no shortened copy of the
rules is needed. On the way it checks, through Prometheus, the gauges the alerts rely on:
pouw_tasks_training on every node and pouw_task_assigned on the drawn miner.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from pouw.devnet import BUILTIN_TASKS, Devnet, free_ports, with_epochs
from tests.monitoring.promql import ALERTS_FILE

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
    ),
]

START_TIMEOUT_S = 120.0
TARGETS_TIMEOUT_S = 30.0
PEERS_TIMEOUT_S = 30.0
TRAINING_TIMEOUT_S = 60.0
ALERT_TIMEOUT_S = 90.0
JOB = "pouw-node"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5.0)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """node label -> value of an instant query."""
        return {
            sample["metric"].get("node", ""): float(sample["value"][1])
            for sample in self.api("query", query=expr)["result"]
        }

    def target_health(self) -> dict[str, str]:
        return {
            target["labels"]["node"]: target["health"]
            for target in self.api("targets", state="active")["activeTargets"]
        }

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


def prometheus_config(network: Devnet) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS_FILE)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{plan.api_port}"], "labels": {"node": plan.node_id}}
                    for plan in network.plans
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """Five nodes, staked, training iris long enough to outlast the test."""
    network = Devnet(
        tmp_path_factory.mktemp("devnet"), nodes=5, task=with_epochs(BUILTIN_TASKS["iris"], 5000)
    )
    try:
        network.start(lambda snapshot: None, timeout=START_TIMEOUT_S)
        client = network.processes["client"].client
        network.task_id = client.submit_task(
            msgspec.to_builtins(network.task), reward=100.0, request_id="prometheus-test"
        )
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def prometheus(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(devnet)))
    (port,) = free_ports(1)
    log = root / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def all_up(server: Prometheus, nodes: set[str]) -> bool:
    if server.process.poll() is not None:
        raise AssertionError("prometheus exited:\n" + server.log.read_text(errors="replace"))
    try:
        health = server.target_health()
    except httpx.HTTPError:
        return False
    return health.keys() == nodes and set(health.values()) == {"up"}


def test_prometheus_sees_a_stopped_miner_as_down(devnet: Devnet, prometheus: Prometheus) -> None:
    nodes = {plan.node_id for plan in devnet.plans}
    wait_until(lambda: all_up(prometheus, nodes), TARGETS_TIMEOUT_S, "every node's target up")
    # From the first evaluation on, a healthy network raises nothing (a fresh Prometheus has
    # one sample of each series: no alert may read that as "no progress"); peers may still
    # be meeting each other, so PoUWPeersLow gets a while to clear.
    assert prometheus.query('count(ALERTS{alertname!="PoUWPeersLow"})') == {}, prometheus.api(
        "alerts"
    )
    wait_until(lambda: prometheus.query("count(ALERTS)") == {}, PEERS_TIMEOUT_S, "no alert")

    wait_until(
        lambda: (
            prometheus.query("pouw_tasks_training >= 1").keys() == nodes
            and prometheus.query("pouw_task_assigned == 1").keys() == {"miner-0"}
        ),
        TRAINING_TIMEOUT_S,
        "every node to see the task training and miner-0 drawn for it",
    )

    miner = devnet.processes["miner-0"].process
    os.kill(miner.pid, signal.SIGKILL)
    miner.wait()

    def miner_down() -> bool:
        alerts = prometheus.alerts("PoUWNodeDown")
        return any(
            a["labels"].get("node") == "miner-0" and a["state"] in ("pending", "firing")
            for a in alerts
        )

    wait_until(miner_down, ALERT_TIMEOUT_S, "PoUWNodeDown pending or firing for miner-0")
    alerts = prometheus.alerts("PoUWNodeDown")
    assert {a["labels"]["node"] for a in alerts} == {"miner-0"}, alerts
    (alert,) = alerts
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == JOB
    assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#pouwnodedown")
    assert prometheus.query(f'up{{job="{JOB}"}} == 1').keys() == nodes - {"miner-0"}
