"""`pouw bench ledger`: full transaction validation against bare signature verification.

tx_per_s counts signed transfers decoded from wire bytes, fully validated (signature, nonce,
balance) and applied to the state; sig_verify_per_s counts bare ed25519 verifications of the
same transactions' signatures, in the same run. block_import_per_s imports blocks of 1,000
transactions into a SQLite-backed chain, storage included.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pouw.blockchain.block import Block, encode_block, sign_block
from pouw.blockchain.chain import Chain
from pouw.blockchain.params import ChainParams
from pouw.blockchain.state import LedgerState
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import (
    Payout,
    Transfer,
    decode_transaction,
    encode_transaction,
    sign_transaction,
)
from pouw.crypto import KeyPair, SignedKind, signed_bytes

Report = Callable[[str], None]


def _params(senders: list[KeyPair]) -> ChainParams:
    allocations = tuple(Payout(recipient=k.address, amount=10**15) for k in senders)
    return ChainParams(chain_id="bench", initial_difficulty=1, allocations=allocations)


def _signed_transfers(senders: list[KeyPair], per_sender: int, chain_id: str) -> list[bytes]:
    recipient = KeyPair.from_seed(b"bench-recipient").address
    return [
        encode_transaction(
            sign_transaction(
                key, Transfer(recipient=recipient, amount=1 + n), nonce=n, fee=1, chain_id=chain_id
            )
        )
        for n in range(per_sender)
        for key in senders
    ]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _measure_verify(encoded: list[bytes], chain_id: str) -> float:
    checks = []
    for data in encoded:
        tx = decode_transaction(data)
        checks.append(
            (
                Ed25519PublicKey.from_public_bytes(tx.sender),
                tx.signature,
                signed_bytes(SignedKind.TRANSACTION, chain_id, tx.txid()),
            )
        )
    start = time.perf_counter()
    for key, signature, message in checks:
        key.verify(signature, message)
    return _rate(len(checks), time.perf_counter() - start)


def _measure_apply(encoded: list[bytes], params: ChainParams) -> float:
    state = LedgerState.genesis(params)
    start = time.perf_counter()
    with state.tracking():
        for data in encoded:
            tx = decode_transaction(data)
            state.apply_transaction(tx, tx.txid(), 1)
    return _rate(len(encoded), time.perf_counter() - start)


def _build_blocks(
    params: ChainParams, encoded: list[bytes], per_block: int, workdir: Path
) -> list[bytes]:
    miner = KeyPair.from_seed(b"bench-miner")
    builder = Chain(ChainStore(workdir / "builder"), params)
    blocks: list[bytes] = []
    for start in range(0, len(encoded) - per_block + 1, per_block):
        txs = [decode_transaction(data) for data in encoded[start : start + per_block]]
        timestamp = builder.tip.header.timestamp_ms + params.block_time_ms
        block: Block = builder.assemble_block(
            miner.public_key, miner.address, txs, timestamp_ms=timestamp
        )
        block = sign_block(block, miner, params.chain_id)
        builder.add_block(block)
        blocks.append(encode_block(block))
    builder.store.close()
    return blocks


def _measure_import(params: ChainParams, blocks: list[bytes], workdir: Path) -> float:
    from pouw.blockchain.block import decode_block

    chain = Chain(ChainStore(workdir / "importer"), params)
    start = time.perf_counter()
    for data in blocks:
        chain.add_block(decode_block(data), data)
    elapsed = time.perf_counter() - start
    chain.store.close()
    return _rate(len(blocks), elapsed)


def run(
    report: Report, *, senders: int = 250, per_sender: int = 20, rounds: int = 3
) -> dict[str, Any]:
    keys = [KeyPair.from_seed(f"bench-sender-{i}".encode()) for i in range(senders)]
    params = _params(keys)
    report(f"signing {senders * per_sender} transfers from {senders} senders")
    encoded = _signed_transfers(keys, per_sender, params.chain_id)

    verify_rates, apply_rates = [], []
    for round_number in range(1, rounds + 1):
        verify_rates.append(_measure_verify(encoded, params.chain_id))
        apply_rates.append(_measure_apply(encoded, params))
        report(
            f"round {round_number}/{rounds}: {apply_rates[-1]:,.0f} tx/s applied, "
            f"{verify_rates[-1]:,.0f} bare verifications/s"
        )
    tx_per_s = statistics.median(apply_rates)
    sig_verify_per_s = statistics.median(verify_rates)

    with tempfile.TemporaryDirectory(prefix="pouw-bench-") as tmp:
        workdir = Path(tmp)
        report("building blocks of 1,000 transactions")
        blocks = _build_blocks(params, encoded, 1_000, workdir)
        block_import_per_s = _measure_import(params, blocks, workdir)
        report(f"imported {len(blocks)} blocks: {block_import_per_s:.2f} blocks/s")

    return {
        "bench": "ledger",
        "transactions": len(encoded),
        "tx_per_s": round(tx_per_s, 1),
        "sig_verify_per_s": round(sig_verify_per_s, 1),
        "ratio": round(tx_per_s / sig_verify_per_s, 3),
        "block_import_per_s": round(block_import_per_s, 2),
        "target_ratio": 0.5,
        "msgspec": msgspec.__version__,
    }
