"""What the operator asks of the Kubernetes API about Secrets, over a whole life: nodes on a
private chain made, funded from the faucet and scaled, a Stake bought through one of them.
The chart's Role grants `create` on Secrets and `get` of `pouw-faucet` and `pouw-api-root`
alone (RBAC cannot narrow `create`, and any other verb, patch included, answers with the
Secret): any other call would be refused in a cluster, and would mean the operator reads
Secrets that are not its own (tests/chart checks the Role itself)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace

import kmock
import pytest

from pouw_operator.builders.genesis import FAUCET_SECRET
from pouw_operator.builders.secrets import API_ROOT_SECRET, derive_api_token
from tests.operator.harness import FAST_SETTINGS, OperatorCluster, operator_cluster
from tests.operator.node_api import ScriptedNode, served
from tests.operator.observe import pouwnode

READABLE_SECRETS = {FAUCET_SECRET, API_ROOT_SECRET}
ROOT = b"\x07" * 32


@pytest.fixture
def cluster_and_node() -> Iterator[tuple[OperatorCluster, ScriptedNode, int]]:
    """The miners' node API expects the miners' own token, derived from a root the test
    planted; the operator starts once it is there."""
    node = ScriptedNode(balance=100.0)
    with (
        served(node, token=derive_api_token(ROOT, "miners")) as url,
        operator_cluster(start=False) as cluster,
    ):
        cluster.create(
            "secrets",
            {
                "metadata": {"name": API_ROOT_SECRET},
                "data": {"root": base64.b64encode(ROOT).decode()},
            },
        )
        seen = len(cluster.server.requests())
        cluster.start_operator(replace(FAST_SETTINGS, node_url=url, api_token=None))
        yield cluster, node, seen


def secret_calls(cluster: OperatorCluster, since: int) -> list[tuple[str, str | None]]:
    return [
        (str(request.action), request.name)
        for request in cluster.server.requests()[since:]
        if request.resource is not None and request.resource.plural == "secrets"
    ]


def test_the_operator_reads_no_secret_but_the_two_it_owns_by_name(
    cluster_and_node: tuple[OperatorCluster, ScriptedNode, int],
) -> None:
    cluster, node, seen = cluster_and_node
    body = pouwnode("miners", "miner", replicas=2)
    body["spec"]["stake"] = 30
    cluster.create("pouwnodes", body)
    cluster.create("pouwnodes", pouwnode("client", "peer"))

    def funded() -> object:
        return ((cluster.get("pouwnodes", "miners") or {}).get("status") or {}).get(
            "fundedReplicas"
        )

    cluster.wait_for(lambda: funded() == [0, 1], message="both miners funded")
    cluster.patch("pouwnodes", "miners", {"spec": {"replicas": 3}})
    cluster.wait_for(lambda: funded() == [0, 1, 2], message="the new miner funded")
    stake = {"metadata": {"name": "extra"}, "spec": {"node": "miners", "amount": 5, "replica": 2}}
    cluster.create("stakes", stake)
    cluster.wait_for(
        lambda: (cluster.get("stakes", "extra") or {}).get("status", {}).get("ticketId"),
        message="a ticket bought with the miners' own token",
    )
    assert len(node.relayed) == 3 and len(node.tickets) == 1

    calls = secret_calls(cluster, seen)
    creates = {name for action, name in calls if action == str(kmock.action.CREATE)}
    reads = [(action, name) for action, name in calls if action != str(kmock.action.CREATE)]
    assert creates  # the network key, the chain's faucet, each node's token
    assert reads, "the faucet seed and the token root are read, by name"
    assert {name for _, name in reads} <= READABLE_SECRETS, reads
    assert {action for action, _ in reads} == {str(kmock.action.FETCH)}, reads
