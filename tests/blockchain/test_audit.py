"""`pouw chain verify`: re-validation from genesis finds the first bad block."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
from tests.support.ledger import ALICE, BOB, ledger_params, mine, open_chain, transfer

from pouw.blockchain.audit import audit_store
from pouw.blockchain.block import encode_block
from pouw.blockchain.state import Account
from pouw.blockchain.store import STORE_FILE
from pouw.crypto import canonical_bytes


def build(data_dir: Path, blocks: int = 4) -> list[bytes]:
    chain = open_chain(data_dir, ledger_params())
    for n in range(blocks):
        mine(chain, [transfer(ALICE, BOB, 10, nonce=n)])
    hashes = chain.main_hashes()
    chain.store.close()
    return hashes


def test_a_good_chain_verifies(tmp_path: Path) -> None:
    build(tmp_path)
    report = audit_store(tmp_path)
    assert report.ok and report.height == 4


def test_a_tampered_block_is_found_with_its_height_and_reason(tmp_path: Path) -> None:
    hashes = build(tmp_path)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    body = db.execute("SELECT body FROM blocks WHERE hash = ?", (hashes[3],)).fetchone()[0]
    from pouw.blockchain.block import decode_block

    block = decode_block(body)
    forged_tx = msgspec.structs.replace(block.transactions[1], fee=0)
    forged = msgspec.structs.replace(block, transactions=(block.transactions[0], forged_tx))
    db.execute("UPDATE blocks SET body = ? WHERE hash = ?", (encode_block(forged), hashes[3]))
    db.commit()
    report = audit_store(tmp_path)
    assert not report.ok
    assert report.height == 3
    assert "bad_merkle_root" in report.reason


def test_tampered_state_rows_are_found(tmp_path: Path) -> None:
    build(tmp_path)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute(
        "UPDATE accounts SET data = ? WHERE address = ?",
        (canonical_bytes(Account(balance=10**12)), BOB.address),
    )
    db.commit()
    report = audit_store(tmp_path)
    assert not report.ok and "stored state differs" in report.reason


def test_a_broken_link_is_reported_as_wrong_prev_hash(tmp_path: Path) -> None:
    hashes = build(tmp_path)
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("UPDATE main_chain SET hash = ? WHERE height = 2", (hashes[3],))
    db.commit()
    report = audit_store(tmp_path)
    assert not report.ok and report.height == 2
