"""Genesis files: what `pouw chain init` writes and a node reads from POUW_GENESIS_FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from pouw.blockchain.genesis import (
    devnet_network_params,
    encode_genesis,
    genesis_hash,
    load_genesis,
    network_params,
    new_genesis,
    write_genesis,
)
from pouw.blockchain.params import devnet_key
from pouw.blockchain.transactions import Payout
from pouw.config import ConfigError
from pouw.crypto import KeyPair

OWNER = KeyPair.from_seed(b"a private seed").address
WHEN = 1_780_000_000_000


def test_a_new_genesis_has_the_standard_params_but_its_own_allocations() -> None:
    params = new_genesis("pouw-lab", [Payout(OWNER, 7)], WHEN)
    devnet = devnet_network_params("pouw-devnet")
    assert params.allocations == (Payout(OWNER, 7),)
    assert params.genesis_time_ms == WHEN and params.chain_id == "pouw-lab"
    assert params == network_params("pouw-lab", [Payout(OWNER, 7)], WHEN)
    assert (params.block_time_ms, params.initial_difficulty, params.bootstrap_task) == (
        devnet.block_time_ms,
        devnet.initial_difficulty,
        devnet.bootstrap_task,
    )


@pytest.mark.parametrize(
    ("chain_id", "allocations", "mistake"),
    [
        ("pouw-devnet-x", [Payout(OWNER, 1)], "is a devnet chain"),
        ("pouw-lab", [], "funds nobody"),
        ("pouw-lab", [Payout(devnet_key("faucet").address, 1)], "public devnet key"),
        ("pouw-lab", [Payout("not-an-address", 1)], "needs an address"),
        ("pouw-lab", [Payout(OWNER, 0)], "positive amount"),
    ],
)
def test_a_new_genesis_refuses_mistakes(
    chain_id: str, allocations: list[Payout], mistake: str
) -> None:
    with pytest.raises(ConfigError, match=mistake):
        new_genesis(chain_id, allocations, WHEN)


def test_a_genesis_file_round_trips_in_json_and_yaml(tmp_path: Path) -> None:
    params = new_genesis("pouw-lab", [Payout(OWNER, 7)], WHEN)
    write_genesis(tmp_path / "genesis.json", params)
    assert load_genesis(tmp_path / "genesis.json", "pouw-lab") == params
    yaml_file = tmp_path / "genesis.yaml"
    yaml_file.write_text(
        f"chain_id: pouw-lab\ngenesis_time_ms: {WHEN}\nallocations:\n  - [{OWNER}, 7]\n"
    )
    assert load_genesis(yaml_file, "pouw-lab").allocations == (Payout(OWNER, 7),)
    with pytest.raises(ConfigError, match="never overwritten"):
        write_genesis(tmp_path / "genesis.json", params)


@pytest.mark.parametrize(
    ("content", "mistake"),
    [
        (None, "No such file"),
        ("chain_id: pouw-lab\n", "explicit allocations"),
        ("{not json", "neither JSON nor YAML"),
        ("chain_id: pouw-lab\nallocations: [[x, -1]]\n", "is invalid"),
    ],
)
def test_a_bad_genesis_file_is_one_line_naming_the_variable(
    tmp_path: Path, content: str | None, mistake: str
) -> None:
    path = tmp_path / "genesis.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=mistake) as refused:
        load_genesis(path, "pouw-lab")
    assert str(refused.value).startswith("POUW_GENESIS_FILE=") and "\n" not in str(refused.value)


def test_a_hand_written_genesis_funding_a_devnet_key_is_refused(tmp_path: Path) -> None:
    public = devnet_network_params("pouw-devnet")
    path = tmp_path / "genesis.json"
    path.write_bytes(encode_genesis(public).replace(b'"pouw-devnet"', b'"pouw-lab"'))
    with pytest.raises(ConfigError, match="public devnet key"):
        load_genesis(path, "pouw-lab")


def test_the_genesis_hash_commits_to_the_allocations() -> None:
    one = new_genesis("pouw-lab", [Payout(OWNER, 7)], WHEN)
    other = new_genesis("pouw-lab", [Payout(OWNER, 8)], WHEN)
    assert genesis_hash(one) != genesis_hash(other)
