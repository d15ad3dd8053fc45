"""The `pouw` command's contracts: exit codes, and a last stdout line of JSON where promised."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from pouw.bench import ledger
from pouw.blockchain.genesis import genesis_hash, load_genesis
from pouw.blockchain.params import devnet_key
from pouw.blockchain.store import STORE_FILE
from pouw.blockchain.transactions import Payout, coins
from pouw.cli import main
from pouw.config import NodeConfig, check_api_exposure
from pouw.crypto import KeyPair
from tests.support.ledger import ALICE, BOB, ledger_params, mine, open_chain, transfer


def stored_chain(data_dir: Path) -> list[bytes]:
    chain = open_chain(data_dir, ledger_params())
    for nonce in range(3):
        mine(chain, [transfer(ALICE, BOB, 5, nonce=nonce)])
    chain.store.close()
    return chain.main_hashes()


def test_chain_verify_accepts_a_good_chain(tmp_path: Path) -> None:
    stored_chain(tmp_path)
    result = CliRunner().invoke(main, ["chain", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "chain OK: 4 blocks" in result.output


def test_chain_verify_names_the_first_bad_block(tmp_path: Path) -> None:
    hashes = stored_chain(tmp_path)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("DELETE FROM blocks WHERE hash = ?", (hashes[2],))
    db.commit()
    result = CliRunner().invoke(main, ["chain", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "INVALID at height 2" in result.output and "missing" in result.output


def test_chain_verify_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["chain", "verify", "--data", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "no chain store" in result.output


def test_devnet_needs_at_least_one_node_per_role() -> None:
    result = CliRunner().invoke(main, ["devnet", "--nodes", "3"])
    assert result.exit_code == 2 and "--nodes" in result.output


def test_ledger_bench_reports_ratios_measured_in_the_same_run() -> None:
    report = ledger.run(lambda line: None, senders=10, per_sender=100, rounds=1)
    assert report["ratio"] == round(report["tx_per_s"] / report["sig_verify_per_s"], 3)
    assert report["tx_per_s"] > 0 and report["block_import_per_s"] > 0
    json.dumps(report)


def test_chain_init_writes_a_genesis_that_funds_only_the_allocations(tmp_path: Path) -> None:
    faucet = tmp_path / "faucet.key"
    faucet.write_bytes(b"\x05" * 32)
    owner = KeyPair.from_seed(b"owner").address
    out = tmp_path / "genesis.json"
    args = ["chain", "init", "--chain-id", "pouw-lab", "--alloc", f"{owner}=2.5"]
    args += ["--fund-key", str(faucet), "--fund-coins", "10", "--genesis-time-ms", "1234"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    params = load_genesis(out, "pouw-lab")
    assert params.allocations == (
        Payout(owner, coins(2.5)),
        Payout(KeyPair.from_seed(b"\x05" * 32).address, coins(10)),
    )
    assert params.genesis_time_ms == 1234
    assert result.output.strip().endswith(genesis_hash(params))


@pytest.mark.parametrize(
    ("args", "mistake"),
    [
        (["--chain-id", "pouw-devnet-2", "--alloc", "ADDR=1"], "is a devnet chain"),
        (["--chain-id", "pouw-lab", "--alloc", f"{devnet_key('miner-0').address}=1"], "devnet"),
        (["--chain-id", "pouw-lab"], "funds nobody"),
        (["--chain-id", "pouw-lab", "--alloc", "nothing"], "ADDRESS=COINS"),
    ],
)
def test_chain_init_refuses_a_public_genesis(tmp_path: Path, args: list[str], mistake: str) -> None:
    out = tmp_path / "genesis.json"
    result = CliRunner().invoke(main, ["chain", "init", *args, "--out", str(out)])
    assert result.exit_code != 0 and mistake in result.output
    assert not out.exists()


def test_a_node_off_devnet_without_a_genesis_file_stops_with_one_line(tmp_path: Path) -> None:
    env = {"POUW_CHAIN_ID": "pouw-main", "POUW_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["node"], env=env)
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "set POUW_GENESIS_FILE" in lines[0], result.output


def test_a_node_off_devnet_with_a_devnet_key_stops_with_one_line(tmp_path: Path) -> None:
    out, key_file = tmp_path / "genesis.json", tmp_path / "node.key"
    owner = KeyPair.from_seed(b"owner").address
    init = ["chain", "init", "--chain-id", "pouw-main", "--alloc", f"{owner}=1"]
    assert CliRunner().invoke(main, [*init, "--out", str(out)]).exit_code == 0
    key_file.write_bytes(b"pouw-devnet:supervisor-0")
    env = {
        "POUW_CHAIN_ID": "pouw-main",
        "POUW_GENESIS_FILE": str(out),
        "POUW_NODE_KEY_FILE": str(key_file),
        "POUW_DATA_DIR": str(tmp_path / "data"),
    }
    result = CliRunner().invoke(main, ["node"], env=env)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "public devnet key" in lines[0] and "random key" in lines[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "node.example"])
def test_a_node_serving_its_api_beyond_loopback_without_a_token_stops_with_one_line(
    tmp_path: Path, host: str
) -> None:
    env = {"POUW_HOST": host, "POUW_DATA_DIR": str(tmp_path), "POUW_API_TOKEN": None}
    result = CliRunner().invoke(main, ["node"], env=env)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"POUW_HOST={host}" in lines[0] and "set POUW_API_TOKEN" in lines[0]
    assert "POUW_API_INSECURE=1" in lines[0]
    assert not (tmp_path / "node.key").exists()  # refused before the node started


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_without_a_token_stays_allowed(host: str) -> None:
    check_api_exposure(NodeConfig(host=host))


def test_the_insecure_switch_allows_it_loudly(caplog: pytest.LogCaptureFixture) -> None:
    check_api_exposure(NodeConfig(host="0.0.0.0", api_insecure=True))
    assert "INSECURE" in caplog.text and "POUW_API_INSECURE" in caplog.text
    check_api_exposure(NodeConfig(host="0.0.0.0", api_token="s3cret"))


class _Started(Exception):
    """Raised where the node would start: the API check passed."""


def test_a_token_from_its_file_lets_a_node_serve_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token a PoUWNode mounts as a file (POUW_API_TOKEN_FILE) counts for the check, as
    POUW_API_TOKEN does: the node on 0.0.0.0 gets past it to its start."""
    token = tmp_path / "api-token"
    token.write_text("s3cret\n")

    def started(*_args: object, **_kwargs: object) -> None:
        raise _Started

    monkeypatch.setattr("pouw.api.runner.PoUWNode", started)
    env = {
        "POUW_HOST": "0.0.0.0",
        "POUW_DATA_DIR": str(tmp_path),
        "POUW_API_TOKEN": None,
        "POUW_API_TOKEN_FILE": str(token),
    }
    result = CliRunner().invoke(main, ["node"], env=env)
    assert isinstance(result.exception, _Started), result.output
    config = NodeConfig.from_env({"POUW_HOST": "0.0.0.0", "POUW_API_TOKEN_FILE": str(token)})
    assert config.api_token == "s3cret"
    check_api_exposure(config)
