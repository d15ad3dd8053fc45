"""Stake through the real operator (kopf, in-memory API server) and a real node API (the
FastAPI app over a scripted node, served by uvicorn on 127.0.0.1)."""

from __future__ import annotations

from typing import Any

import pytest

from pouw.roles import NodeRole
from pouw_operator.handlers.stake import live_ticket, pod_of, request_id
from pouw_operator.settings import OperatorSettings
from tests.operator.harness import OperatorCluster
from tests.operator.node_api import ScriptedNode
from tests.operator.observe import (
    Body,
    condition_of,
    in_phase,
    pouwnode,
    reconciles,
    resources,
    with_condition,
)


@pytest.fixture
def operator_settings(node_api_settings: OperatorSettings) -> OperatorSettings:
    return node_api_settings


def stake(name: str, node: str = "miners", amount: float = 25, **spec: Any) -> Body:
    return {"metadata": {"name": name}, "spec": {"node": node, "amount": amount, **spec}}


def status_of(cluster: OperatorCluster, name: str) -> Body:
    return dict((cluster.get("stakes", name) or {}).get("status") or {})


def test_the_ticket_is_bought_once_and_active_once_mined(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miners", "miner", replicas=2))
    created = cluster.create("stakes", stake("extra", replica=1, role="verifier"))
    pending = cluster.wait_for(lambda: status_of(cluster, "extra").get("ticketId"))
    status = status_of(cluster, "extra")
    [ticket] = node.tickets.values()
    assert pending == ticket.ticket_id and status["phase"] == "Pending"
    assert status["lockedAmount"] == 25.0
    assert condition_of(status, "Bought")["status"] == "True"
    assert condition_of(status, "Confirmed")["reason"] == "AwaitingBlock"
    assert node.staked == [(25.0, NodeRole.VERIFIER)]
    assert set(node.tickets) == {request_id(created["metadata"]["uid"])}
    assert resources(cluster, "Stake", "Pending") == 1

    node.confirmed.add(ticket.ticket_id)  # mined
    status = cluster.wait_for(in_phase(cluster, "stakes", "extra", "Active"), message="Active")
    assert condition_of(status, "Confirmed")["reason"] == "OnChain"
    assert status["ticketId"] == ticket.ticket_id and status["lockedAmount"] == 25.0
    assert (
        resources(cluster, "Stake", "Active") == 1 and resources(cluster, "Stake", "Pending") == 0
    )
    assert reconciles(cluster, "Stake", "error") == 0


def test_a_refused_stake_fails_with_the_nodes_reason(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miners", "miner"))
    cluster.create("stakes", stake("greedy", amount=1000))
    status = cluster.wait_for(in_phase(cluster, "stakes", "greedy", "Failed"), message="Failed")
    bought = condition_of(status, "Bought")
    assert (bought["status"], bought["reason"]) == ("False", "Overspend")
    assert "balance is 100" in bought["message"] and "ticketId" not in status
    assert node.staked == []
    assert reconciles(cluster, "Stake", "retry") == 0 and reconciles(cluster, "Stake", "error") == 0


def test_a_restarted_operator_does_not_buy_again(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miners", "miner"))
    cluster.create("stakes", stake("once"))
    ticket_id = cluster.wait_for(lambda: status_of(cluster, "once").get("ticketId"))

    resumed = reconciles(cluster, "Stake", "ok")
    cluster.restart_operator()
    cluster.wait_for(lambda: reconciles(cluster, "Stake", "ok") > resumed, message="resume")
    assert len(node.staked) == 1

    # Between buying and writing the ticket id: the operator asks again, the node remembers.
    cluster.stop_operator()
    cluster.patch("stakes", "once", {"status": {"ticketId": None, "phase": None}}, "status")
    cluster.start_operator()
    again = cluster.wait_for(lambda: status_of(cluster, "once").get("ticketId"))
    assert again == ticket_id and len(node.staked) == 1 and node.balance == 75.0


def test_a_stake_of_a_missing_node_waits_for_it(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("stakes", stake("early", node="later"))
    not_found = with_condition(cluster, "stakes", "early", "Bought", reason="NodeNotFound")
    bought = cluster.wait_for(not_found, message="NodeNotFound")
    assert bought["status"] == "False" and "no PoUWNode later" in bought["message"]
    assert status_of(cluster, "early")["phase"] == "Pending"
    assert reconciles(cluster, "Stake", "error") == 0

    cluster.create("pouwnodes", pouwnode("later", "miner"))
    assert cluster.wait_for(lambda: status_of(cluster, "early").get("ticketId"))
    assert node.staked == [(25.0, None)]


def test_an_unreachable_node_leaves_the_stake_pending(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miners", "miner"))
    node.unavailable = True
    cluster.create("stakes", stake("patient"))
    failing = with_condition(cluster, "stakes", "patient", "Bought", reason="NodeUnreachable")
    assert cluster.wait_for(failing, message="NodeUnreachable")["status"] == "Unknown"
    cluster.wait_for(lambda: reconciles(cluster, "Stake", "retry") >= 2, message="retries")
    node.unavailable = False
    assert cluster.wait_for(lambda: status_of(cluster, "patient").get("ticketId"))
    assert len(node.staked) == 1 and reconciles(cluster, "Stake", "error") == 0


def test_helpers() -> None:
    assert pod_of({"node": "miners"}) == ("miners", 0)
    assert pod_of({"node": "miners", "replica": 3}) == ("miners", 3)
    economics = {"tickets": [{"ticket_id": "a", "amount": 1.0}, "junk"]}
    assert live_ticket(economics, "a") == {"ticket_id": "a", "amount": 1.0}
    assert live_ticket(economics, "b") is None and live_ticket({}, "a") is None
