"""PLACEHOLDER SEAL, for tests only: finds a nonce by plain hashing, with no training behind it.

Step 1 tests use it to make blocks that meet their difficulty; real blocks are sealed by the
training miner (pouw.mining). Nothing outside tests/ may import this module.
"""

from __future__ import annotations

import msgspec

from pouw.blockchain.block import Block, meets_difficulty, sign_block
from pouw.crypto import KeyPair


def seal_with_plain_hash(block: Block, key: KeyPair, chain_id: str) -> Block:
    header = block.header
    nonce = 0
    while not meets_difficulty(
        msgspec.structs.replace(header, nonce=nonce).seal_hash(), header.difficulty
    ):
        nonce += 1
    sealed = msgspec.structs.replace(block, header=msgspec.structs.replace(header, nonce=nonce))
    return sign_block(sealed, key, chain_id)


def unsealable(block: Block, key: KeyPair, chain_id: str) -> Block:
    """A signed block whose hash does NOT meet its difficulty (for 'target not met' tests)."""
    header = block.header
    nonce = 0
    while meets_difficulty(
        msgspec.structs.replace(header, nonce=nonce).seal_hash(), header.difficulty
    ):
        nonce += 1
    sealed = msgspec.structs.replace(block, header=msgspec.structs.replace(header, nonce=nonce))
    return sign_block(sealed, key, chain_id)
