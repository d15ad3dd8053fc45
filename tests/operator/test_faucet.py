"""Coins for a private chain's pods: the real operator (kopf, in-memory API server) funds each
staking replica once from the namespace's faucet, to the address the pod's own API names,
through a real node API (FastAPI over a scripted node). Every pod answers at the one scripted
node here, so every replica names the same address."""

from __future__ import annotations

import base64
from typing import Any, cast

import pytest

from pouw.blockchain.params import devnet_key
from pouw.blockchain.transactions import Transfer, coins
from pouw.crypto import KeyPair
from pouw.spec import DEFAULT_FEE
from pouw_operator.faucet import FUNDED_FIELD, funded_ordinals, needs_funding
from pouw_operator.resources import NodeResource, PoUWNodeSpec
from pouw_operator.settings import OperatorSettings
from tests.operator.harness import OperatorCluster
from tests.operator.node_api import ScriptedNode
from tests.operator.observe import pouwnode


@pytest.fixture
def operator_settings(node_api_settings: OperatorSettings) -> OperatorSettings:
    return node_api_settings


def funded(cluster: OperatorCluster, name: str) -> list[int] | None:
    return ((cluster.get("pouwnodes", name) or {}).get("status") or {}).get(FUNDED_FIELD)


def test_each_staking_replica_is_funded_once_from_the_faucet(
    operator_cluster: OperatorCluster, node: ScriptedNode
) -> None:
    cluster = operator_cluster
    body = pouwnode("miners", "miner", replicas=2)
    body["spec"]["stake"] = 40
    cluster.create("pouwnodes", body)
    cluster.wait_for(lambda: funded(cluster, "miners") == [0, 1], message="funded")

    faucet = cluster.get("secrets", "pouw-faucet")
    assert faucet is not None
    faucet_key = KeyPair.from_seed(base64.b64decode(faucet["data"]["seed"]))
    assert [tx.sender for tx in node.relayed] == [faucet_key.public_key] * 2
    assert [tx.nonce for tx in node.relayed] == [2, 3]  # next_nonce, as the node counts it
    assert [tx.payload for tx in node.relayed] == [
        Transfer(recipient=node.ADDRESS, amount=coins(40 + DEFAULT_FEE))
    ] * 2
    assert faucet_key.address != devnet_key("faucet").address

    cluster.patch("pouwnodes", "miners", {"spec": {"replicas": 3}})
    cluster.wait_for(lambda: funded(cluster, "miners") == [0, 1, 2], message="scaled")
    assert len(node.relayed) == 3  # the new replica only: the others were funded already


@pytest.mark.parametrize(
    ("status", "ordinals"),
    [
        (None, set()),
        ({}, set()),
        ({FUNDED_FIELD: [0, 2]}, {0, 2}),
        ({FUNDED_FIELD: [1, -1, True, "2"]}, {1}),  # what no operator writes is not counted
    ],
)
def test_funded_ordinals_are_the_status_record(
    status: dict[str, Any] | None, ordinals: set[int]
) -> None:
    assert funded_ordinals({"status": status}) == ordinals


@pytest.mark.parametrize(
    ("spec", "funded"),
    [
        ({"role": "miner"}, True),
        ({"role": "verifier", "stake": 5}, True),
        ({"role": "miner", "chainId": "pouw-devnet"}, False),  # the devnet genesis funds it
        ({"role": "peer"}, True),  # a peer stakes nothing, it pays for tasks
        ({"role": "miner", "stake": 0}, False),
    ],
)
def test_only_replicas_off_devnet_are_funded(spec: dict[str, Any], funded: bool) -> None:
    node = NodeResource("n", "net", "uid", cast(PoUWNodeSpec, spec))
    assert needs_funding(node) is funded
