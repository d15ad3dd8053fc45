"""End to end on kind: the image built and loaded, `helm install pouw charts/`, the network up,
examples/mytask.yaml trained to Completed, the printer columns and metrics checked, the miners
scaled with `kubectl scale`, and `helm uninstall` leaving no operator and no node behind.

The tests are the steps of one scenario, in order; a failed step skips the ones after it.
Without Docker, kind, kubectl or helm the module skips with one line naming what is missing
(fails instead with POUW_E2E_REQUIRE=1, as CI sets). See e2e/README.md."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.conftest import (
    NAMESPACE,
    NODE_SELECTOR,
    OPERATOR,
    OPERATOR_SELECTOR,
    RELEASE,
    REPO,
    CommandError,
    NotYet,
    env_flag,
    env_seconds,
    helm_releases,
    helm_uninstall,
    kubectl,
    kubectl_json,
    log,
    missing_tools,
    network_mode,
    port_forward,
    table,
    wait_for,
)

MISSING = missing_tools()
if MISSING:
    if env_flag("POUW_E2E_REQUIRE"):
        pytest.fail(f"e2e cannot run (POUW_E2E_REQUIRE=1): {', '.join(MISSING)}", pytrace=False)
    pytest.skip(f"e2e skipped: {', '.join(MISSING)}", allow_module_level=True)

pytestmark = [
    pytest.mark.usefixtures("release"),
    # A backstop only: every wait below has its own, shorter deadline. The first step's setup
    # builds the image (torch) and creates the cluster.
    pytest.mark.timeout(3600),
]

NETWORK = {
    "supervisor": "supervisor",
    "miners": "miner",
    "verifier": "verifier",
    "evaluator": "evaluator",
    "client": "peer",
}
"""The PoUWNodes of the devnet (chart or examples/network.yaml) and their roles: the names the
devnet genesis funds."""
MLTASK = yaml.safe_load((REPO / "examples" / "mytask.yaml").read_text(encoding="utf-8"))
NETWORK_READY_S = 600.0
TASK_COMPLETED_S = env_seconds("POUW_E2E_TASK_TIMEOUT", 900.0)
STATUS_MIRRORED_S = 120.0
GONE_S = 300.0


def pouwnodes() -> dict[str, dict[str, Any]]:
    listed = kubectl_json("-n", NAMESPACE, "get", "pouwnodes")
    return {item["metadata"]["name"]: item for item in listed["items"]}


def replicas_of(name: str) -> int:
    return int(kubectl_json("-n", NAMESPACE, "get", "pouwnode", name)["spec"]["replicas"])


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def metric_samples(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics on the forwarded port: sample name -> [(labels, value)]."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode("utf-8")
    except OSError as exc:  # the forward not accepting yet, or the pod's answer cut short
        raise NotYet(f"GET /metrics: {exc}") from exc
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def test_operator_and_network_come_up() -> None:
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{OPERATOR}", "--timeout=300s",
            timeout=360)  # fmt: skip
    if network_mode() == "examples":
        kubectl("-n", NAMESPACE, "apply", "-f", str(REPO / "examples" / "network.yaml"))

    def all_there() -> dict[str, dict[str, Any]]:
        nodes = pouwnodes()
        if set(nodes) != set(NETWORK):
            raise NotYet(f"PoUWNodes {sorted(nodes)}")
        return nodes

    nodes = wait_for(all_there, 60, f"PoUWNodes {', '.join(NETWORK)}")
    assert {name: node["spec"]["role"] for name, node in nodes.items()} == NETWORK
    wanted = {name: int(node["spec"]["replicas"]) for name, node in nodes.items()}

    def statefulsets_ready() -> bool:
        listed = kubectl_json("-n", NAMESPACE, "get", "statefulsets", "-l", NODE_SELECTOR)
        ready = {
            s["metadata"]["name"]: s["status"].get("readyReplicas", 0) for s in listed["items"]
        }
        behind = {
            name: f"{ready.get(name)}/{n}" for name, n in wanted.items() if ready.get(name) != n
        }
        if behind:
            raise NotYet(f"ready/wanted: {behind}")
        return True

    wait_for(statefulsets_ready, NETWORK_READY_S, "every node StatefulSet ready")
    pods = kubectl_json("-n", NAMESPACE, "get", "pods", "-l", NODE_SELECTOR)["items"]
    assert len(pods) == sum(wanted.values())
    assert all(pod_ready(pod) for pod in pods)
    operator = kubectl_json("-n", NAMESPACE, "get", "pods", "-l", OPERATOR_SELECTOR)["items"]
    images = {c["image"] for pod in [*pods, *operator] for c in pod["spec"]["containers"]}
    assert images == {"pouw:dev"}, "the operator gives node pods the chart's image"

    def status_mirrored() -> bool:
        behind = {
            name: node.get("status", {}).get("readyReplicas")
            for name, node in pouwnodes().items()
            if node.get("status", {}).get("readyReplicas") != wanted[name]
        }
        if behind:
            raise NotYet(f"status.readyReplicas {behind}")
        return True

    wait_for(status_mirrored, STATUS_MIRRORED_S, "PoUWNode status.readyReplicas")


def test_mltask_completes() -> None:
    kubectl("-n", NAMESPACE, "apply", "-f", str(REPO / "examples" / "mytask.yaml"))
    name = MLTASK["metadata"]["name"]
    seen: list[str] = []

    def completed() -> dict[str, Any]:
        status = kubectl_json("-n", NAMESPACE, "get", "mltask", name).get("status", {})
        progress = (
            f"phase {status.get('phase')} epoch {status.get('epoch')} "
            f"accuracy {status.get('accuracy')} blocks {status.get('blocks')}"
        )
        if not seen or seen[-1] != progress:
            seen.append(progress)
            log(f"mltask/{name}: {progress}")
        if status.get("phase") == "Failed":
            raise AssertionError(f"mltask/{name} Failed: {status.get('message')}: {status}")
        if status.get("phase") != "Completed":
            raise NotYet(progress)
        return status  # type: ignore[no-any-return]

    status = wait_for(completed, TASK_COMPLETED_S, f"mltask/{name} Completed", interval=5)
    min_accuracy = float(MLTASK["spec"]["minAccuracy"])
    assert status["testAccuracy"] >= min_accuracy, status
    assert status["blocks"] > 0 and status["epoch"] > 0, status
    assert status["taskId"], status
    succeeded = [c for c in status.get("conditions", []) if c["type"] == "Succeeded"]
    assert succeeded and succeeded[0]["status"] == "True", status


def test_printer_columns() -> None:
    header, _ = table(kubectl("-n", NAMESPACE, "get", "pouwnodes"))
    assert header == ["NAME", "ROLE", "REPLICAS", "READY", "HEIGHT", "AGE"]
    wide, _ = table(kubectl("-n", NAMESPACE, "get", "pouwnodes", "-o", "wide"))
    assert wide[:5] == header[:5] and {"PEERS", "CHAIN"} <= set(wide)

    def rows_ready() -> dict[str, dict[str, str]]:
        _, rows = table(kubectl("-n", NAMESPACE, "get", "pouwnodes"))
        by_name = {row["NAME"]: row for row in rows}
        lagging = {
            name: row
            for name, row in by_name.items()
            if row["READY"] != row["REPLICAS"] or not row["HEIGHT"].isdigit()
            or int(row["HEIGHT"]) <= 0
        }  # fmt: skip
        if lagging:
            raise NotYet(f"rows {lagging}")
        return by_name

    rows = wait_for(rows_ready, STATUS_MIRRORED_S, "every PoUWNode READY and at a height > 0")
    assert {name: row["ROLE"] for name, row in rows.items()} == NETWORK

    name = MLTASK["metadata"]["name"]
    epochs = int(MLTASK["spec"]["hyperparameters"]["epochs"])
    header, rows_list = table(kubectl("-n", NAMESPACE, "get", "mltasks"))
    assert header == ["NAME", "PHASE", "EPOCH", "ACCURACY", "AGE"]
    task = {row["NAME"]: row for row in rows_list}[name]
    assert task["PHASE"] == "Completed"
    assert 1 <= int(task["EPOCH"]) <= epochs
    assert 0.0 <= float(task["ACCURACY"]) <= 1.0
    header, rows_list = table(kubectl("-n", NAMESPACE, "get", "mltasks", "-o", "wide"))
    assert header == [
        "NAME",
        "PHASE",
        "EPOCH",
        "ACCURACY",
        "TEST-ACCURACY",
        "BLOCKS",
        "TASK",
        "AGE",
    ]
    task = {row["NAME"]: row for row in rows_list}[name]
    assert float(task["TEST-ACCURACY"]) >= float(MLTASK["spec"]["minAccuracy"])
    assert int(task["BLOCKS"]) > 0
    status = kubectl_json("-n", NAMESPACE, "get", "mltask", name)["status"]
    assert task["TASK"] == status["taskId"]


def test_metrics() -> None:
    with port_forward("pod/client-0", 8080) as port:
        node = wait_for(lambda: metric_samples(port), 30, "the client node's /metrics")
    heights = [value for _, value in node.get("pouw_chain_height", [])]
    assert heights and heights[0] > 0, heights
    with port_forward(f"svc/{OPERATOR}", 8080) as port:
        operator = wait_for(lambda: metric_samples(port), 30, "the operator's /metrics")
    reconciles = {
        (labels["kind"], labels["result"]): value
        for labels, value in operator.get("pouw_operator_reconcile_total", [])
    }
    assert reconciles.get(("PoUWNode", "ok"), 0) > 0, reconciles
    assert reconciles.get(("MLTask", "ok"), 0) > 0, reconciles
    phases = {
        (labels["kind"], labels["phase"]): value
        for labels, value in operator.get("pouw_operator_resources", [])
    }
    assert phases.get(("MLTask", "Completed")) == 1, phases


def test_scale_miners() -> None:
    replicas = replicas_of("miners") + 1
    kubectl("-n", NAMESPACE, "scale", "pouwnode", "miners", f"--replicas={replicas}")
    assert replicas_of("miners") == replicas

    def statefulset_scaled() -> bool:
        spec = kubectl_json("-n", NAMESPACE, "get", "statefulset", "miners")["spec"]
        if spec["replicas"] != replicas:
            raise NotYet(f"statefulset/miners spec.replicas {spec['replicas']}")
        return True

    wait_for(statefulset_scaled, STATUS_MIRRORED_S, f"statefulset/miners at {replicas} replicas")
    newest = f"miners-{replicas - 1}"

    def newest_ready() -> bool:
        pod = kubectl_json("-n", NAMESPACE, "get", "pod", newest)
        if not pod_ready(pod):
            raise NotYet(f"pod {newest}: {pod.get('status', {}).get('phase')}")
        return True

    wait_for(newest_ready, NETWORK_READY_S, f"pod {newest} Ready")

    def mirrored() -> dict[str, str]:
        _, rows = table(kubectl("-n", NAMESPACE, "get", "pouwnode", "miners"))
        if rows[0]["READY"] != str(replicas):
            raise NotYet(f"row {rows[0]}")
        return rows[0]

    row = wait_for(mirrored, STATUS_MIRRORED_S, f"PoUWNode miners READY {replicas}")
    assert row["REPLICAS"] == str(replicas)


def test_helm_uninstall() -> None:
    if network_mode() == "examples":
        kubectl("-n", NAMESPACE, "delete", "-f", str(REPO / "examples" / "network.yaml"),
                "--timeout=120s", timeout=180)  # fmt: skip
    helm_uninstall(timeout=300)
    assert RELEASE not in helm_releases()

    def all_gone() -> bool:
        queries = {
            "operator": ("deployments,pods", "-l", OPERATOR_SELECTOR),
            "nodes": ("statefulsets,pods,pvc", "-l", NODE_SELECTOR),
            "pouwnodes": ("pouwnodes",),
        }
        left = {
            what: names.split()
            for what, query in queries.items()
            if (names := kubectl("-n", NAMESPACE, "get", *query, "-o", "name")).strip()
        }
        if left:
            raise NotYet(f"still there: {left}")
        return True

    wait_for(all_gone, GONE_S, "the operator, the PoUWNodes and their pods and claims gone")
    # Helm leaves CRDs it installed from crds/ in place (and so every other MLTask's data).
    kubectl("get", "crd", "pouwnodes.pouw.network", "mltasks.pouw.network", "stakes.pouw.network")
    # No finalizer holds an MLTask once the operator is gone.
    try:
        kubectl("-n", NAMESPACE, "delete", "mltask", MLTASK["metadata"]["name"], "--timeout=60s",
                timeout=90)  # fmt: skip
    except CommandError as exc:
        pytest.fail(f"the MLTask could not be deleted without the operator: {exc}")
