"""The namespace's private chain: a random faucet, and a genesis that funds it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from pouw.blockchain.genesis import genesis_hash, load_genesis
from pouw.config import ConfigError
from pouw.crypto import KeyPair
from pouw_operator.builders.genesis import (
    build_faucet_secret,
    build_genesis_configmap,
    faucet_seed,
    genesis_chain_id,
)
from pouw_operator.resources import NodeSpec, private_chain_id
from tests.operator.builders.manifests import NAMESPACE, counting_entropy, valid

WHEN = 1_790_000_000_000


def test_the_faucet_seed_is_random_and_the_genesis_funds_only_its_address(
    tmp_path: Path,
) -> None:
    secret = valid(build_faucet_secret(NAMESPACE, entropy=counting_entropy()))
    seed = faucet_seed(secret)
    assert seed == b"\x01" * 32
    assert faucet_seed(build_faucet_secret(NAMESPACE)) != faucet_seed(
        build_faucet_secret(NAMESPACE)
    )
    configmap = valid(build_genesis_configmap(NAMESPACE, "pouw-net", seed, WHEN))
    assert configmap["metadata"]["name"] == "pouw-genesis"
    assert "ownerReferences" not in configmap["metadata"]
    path = tmp_path / "genesis.json"
    path.write_text(configmap["data"]["genesis.json"])
    params = load_genesis(path, "pouw-net")  # what a node reads from POUW_GENESIS_FILE
    assert [a.recipient for a in params.allocations] == [KeyPair.from_seed(seed).address]
    assert params.genesis_time_ms == WHEN
    assert configmap["data"]["genesisHash"] == genesis_hash(params)
    assert genesis_chain_id(configmap) == "pouw-net"


def test_a_devnet_chain_gets_no_genesis_configmap() -> None:
    with pytest.raises(ConfigError, match="devnet"):
        build_genesis_configmap(NAMESPACE, "pouw-devnet", b"\x01" * 32, WHEN)


@pytest.mark.parametrize(
    ("namespace", "chain_id"),
    [("net", "pouw-net"), ("devnet", "pouw-private-devnet"), ("x" * 70, "pouw-" + "x" * 59)],
)
def test_a_node_without_a_chain_id_joins_its_namespaces_private_chain(
    namespace: str, chain_id: str
) -> None:
    assert private_chain_id(namespace) == chain_id
    spec = NodeSpec.parse({"role": "miner"}, namespace)
    assert spec.chain_id == chain_id and not spec.devnet
