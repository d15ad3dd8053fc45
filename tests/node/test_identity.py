"""Where a node's key comes from, and which devnet keys the genesis funds."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pouw.blockchain.genesis import new_genesis, write_genesis
from pouw.blockchain.params import devnet_key, devnet_params
from pouw.blockchain.transactions import Payout
from pouw.config import ConfigError
from pouw.crypto import KeyPair
from pouw.node.identity import (
    KEY_FILE,
    check_node_key,
    devnet_seed,
    load_node_key,
    network_params,
)


def test_a_new_devnet_node_gets_its_funded_key_and_keeps_it(tmp_path: Path) -> None:
    key = load_node_key(tmp_path, "miners-1", "pouw-devnet")
    assert key.address == devnet_key("miners-1").address
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert load_node_key(tmp_path, "another-id", "pouw-devnet").address == key.address


def test_a_node_off_devnet_gets_a_random_key(tmp_path: Path) -> None:
    first = load_node_key(tmp_path / "a", "miners-1", "mainnet")
    second = load_node_key(tmp_path / "b", "miners-1", "mainnet")
    assert first.address != second.address != devnet_key("miners-1").address


def test_a_key_file_wins_over_the_data_dir(tmp_path: Path) -> None:
    load_node_key(tmp_path, "miners-1", "pouw-devnet")
    key_file = tmp_path / "mounted.key"
    key_file.write_bytes(b"\x07" * 32)
    key = load_node_key(tmp_path, "miners-1", "pouw-devnet", key_file)
    assert key.address == KeyPair.from_seed(b"\x07" * 32).address


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "empty"])
def test_an_unusable_key_file_stops_the_start_naming_the_variable(
    tmp_path: Path, content: bytes | None
) -> None:
    key_file = tmp_path / "node.key"
    if content is not None:
        key_file.write_bytes(content)
    with pytest.raises(ConfigError, match="POUW_NODE_KEY_FILE"):
        load_node_key(tmp_path / "data", "n", "pouw-devnet", key_file)


@pytest.mark.parametrize(
    "pod", ["supervisor-0", "miners-2", "verifier-0", "evaluator-0", "client-0"]
)
def test_the_devnet_genesis_funds_the_example_networks_pods(pod: str) -> None:
    funded = {payout.recipient for payout in devnet_params().allocations}
    assert KeyPair.from_seed(devnet_seed(pod)).address in funded


def test_network_params_derive_the_devnet_genesis_only_on_devnet_chains() -> None:
    funded = {payout.recipient for payout in network_params("pouw-devnet-2").allocations}
    assert devnet_key("miner").address in funded
    with pytest.raises(ConfigError, match="set POUW_GENESIS_FILE") as refused:
        network_params("pouw-main")
    assert "\n" not in str(refused.value)


def test_network_params_off_devnet_come_from_the_genesis_file(tmp_path: Path) -> None:
    owner = KeyPair.from_seed(b"owner's private seed")
    params = new_genesis("pouw-main", [Payout(owner.address, 5)], 1_700_000_000_000)
    path = tmp_path / "genesis.json"
    write_genesis(path, params)
    assert network_params("pouw-main", path) == params
    assert devnet_key("miner").address not in {p.recipient for p in params.allocations}
    with pytest.raises(ConfigError, match="not of POUW_CHAIN_ID='pouw-other'"):
        network_params("pouw-other", path)


@pytest.mark.parametrize("seed", [b"pouw-devnet:miner-0", b"pouw-devnet:my-own-id"])
def test_a_node_refuses_a_devnet_key_off_devnet(tmp_path: Path, seed: bytes) -> None:
    key_file = tmp_path / "node.key"
    key_file.write_bytes(seed)
    key = load_node_key(tmp_path / "data", "my-own-id", "pouw-main", key_file)
    with pytest.raises(ConfigError, match="public devnet key") as refused:
        check_node_key(key, "my-own-id", "pouw-main", key_file, tmp_path / "data")
    assert "POUW_NODE_KEY_FILE" in str(refused.value) and "\n" not in str(refused.value)
    check_node_key(key, "my-own-id", "pouw-devnet", key_file, tmp_path / "data")  # accepted


def test_a_random_key_off_devnet_is_accepted(tmp_path: Path) -> None:
    key = load_node_key(tmp_path, "miner-0", "pouw-main")
    check_node_key(key, "miner-0", "pouw-main", None, tmp_path)
