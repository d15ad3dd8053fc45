"""Building chains in tests: deterministic keys, a fixed clock, blocks on any parent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from pouw.blockchain.block import Block
from pouw.blockchain.chain import Chain, ChainUpdate
from pouw.blockchain.params import ChainParams, devnet_key, devnet_params
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import Payload, Transaction, Transfer, sign_transaction
from pouw.crypto import KeyPair
from tests.support.placeholder_seal import seal_with_plain_hash

ALICE = devnet_key("alice")
BOB = devnet_key("bob")
CAROL = devnet_key("carol")
MINER = devnet_key("miner")
EVALUATOR = devnet_key("evaluator")
VERIFIER = devnet_key("verifier")

FAR_FUTURE_MS = 4_000_000_000_000


def ledger_params(**overrides: object) -> ChainParams:
    names = ("alice", "bob", "carol", "miner", "evaluator", "verifier")
    return devnet_params(names, balance=1_000_000_000, **{"initial_difficulty": 4, **overrides})


def open_chain(data_dir: Path, params: ChainParams | None = None) -> Chain:
    return Chain(ChainStore(data_dir), params, clock_ms=lambda: FAR_FUTURE_MS)


def signed(
    key: KeyPair, payload: Payload, nonce: int, fee: int = 10, chain_id: str = "pouw-devnet"
) -> Transaction:
    return sign_transaction(key, payload, nonce=nonce, fee=fee, chain_id=chain_id)


def transfer(
    sender: KeyPair, recipient: KeyPair, amount: int, nonce: int, fee: int = 10
) -> Transaction:
    return signed(sender, Transfer(recipient=recipient.address, amount=amount), nonce, fee)


def make_block(
    chain: Chain,
    txs: Sequence[Transaction] = (),
    *,
    parent: bytes | None = None,
    miner: KeyPair = MINER,
    spacing_ms: int | None = None,
) -> Block:
    parent_hash = parent if parent is not None else chain.tip.hash
    parent_entry = chain.entry(parent_hash)
    assert parent_entry is not None
    timestamp = parent_entry.header.timestamp_ms + (spacing_ms or chain.params.block_time_ms)
    block = chain.assemble_block(
        miner.public_key, miner.address, txs, timestamp_ms=timestamp, parent_hash=parent_hash
    )
    return seal_with_plain_hash(block, miner, chain.params.chain_id)


def mine(chain: Chain, txs: Sequence[Transaction] = (), **kwargs: object) -> ChainUpdate:
    return chain.add_block(make_block(chain, txs, **kwargs))  # type: ignore[arg-type]


def resign(block: Block, **header_changes: object) -> Block:
    """The same block with header fields changed, resealed and resigned by its miner."""
    header = msgspec.structs.replace(block.header, **header_changes)
    return seal_with_plain_hash(msgspec.structs.replace(block, header=header), MINER, "pouw-devnet")
