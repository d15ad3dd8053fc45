"""The `pouw` command's contracts: exit codes, and a last stdout line of JSON where promised."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from pouw.bench import ledger
from pouw.blockchain.store import STORE_FILE
from pouw.cli import main
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
