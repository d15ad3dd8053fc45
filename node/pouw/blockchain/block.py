"""Blocks whose headers fit PoUW: besides the usual fields, a header commits to the iteration
message that mined it, to the history of messages it applied, and to the precursor its nonce
was derived from.

Difficulty is an integer: a header hash meets it when hash * difficulty < 2**256, so each
block's expected work equals its difficulty and cumulative work is a plain sum.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta

from pouw.blockchain.transactions import Hash, Transaction
from pouw.crypto import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    ZERO_HASH,
    KeyPair,
    SignedKind,
    canonical_bytes,
    hash_concat,
    sha256,
    verify_as,
)
from pouw.errors import MalformedData

BLOCK_VERSION: Final = 1
HASH_SPACE: Final = 1 << 256

UInt64 = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Difficulty = Annotated[int, Meta(ge=1, le=2**62)]


class BlockHeader(msgspec.Struct, frozen=True, array_like=True):
    version: UInt64
    height: UInt64
    prev_hash: Hash
    merkle_root: Hash
    timestamp_ms: UInt64
    difficulty: Difficulty
    nonce: UInt64
    miner: Annotated[bytes, Meta(max_length=PUBLIC_KEY_SIZE)]
    iteration_hash: Hash
    history_commitment: Hash
    precursor: Hash
    device_class: Annotated[str, Meta(max_length=16)] = "cpu"

    def hash(self) -> bytes:
        return sha256(canonical_bytes(self))

    def seal_hash(self) -> bytes:
        """What must meet the difficulty: the parent, the precursor and the nonce only. Every
        other header field (time, transactions, reward recipient) is free to its miner, so
        none of them may buy another lottery draw."""
        return seal_hash(self.prev_hash, self.precursor, self.nonce)


class Block(msgspec.Struct, frozen=True, array_like=True):
    header: BlockHeader
    transactions: tuple[Transaction, ...]
    iteration_message: Annotated[bytes, Meta(max_length=1 << 20)] = b""
    signature: Annotated[bytes, Meta(max_length=SIGNATURE_SIZE)] = b""
    checkpoint: Annotated[bytes, Meta(max_length=1 << 27)] = b""
    """The model the iteration started from (safetensors), for verifiers to re-run it."""

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return self.header.hash()


def seal_hash(prev_hash: bytes, precursor: bytes, nonce: int) -> bytes:
    return sha256(b"pouw-seal" + prev_hash + precursor + nonce.to_bytes(8, "big"))


def meets_difficulty(block_hash: bytes, difficulty: int) -> bool:
    return int.from_bytes(block_hash, "big") * difficulty < HASH_SPACE


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962-style tree: leaves and inner nodes are domain-separated, odd nodes carried up
    unpaired, so no two different lists share a root (unlike Bitcoin's duplicate-last rule)."""
    if not leaves:
        return ZERO_HASH
    level = [hash_concat(b"\x00", leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [hash_concat(b"\x01", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def sign_block(block: Block, key: KeyPair, chain_id: str) -> Block:
    signature = key.sign_as(SignedKind.BLOCK, chain_id, block.hash())
    return msgspec.structs.replace(block, signature=signature)


def has_valid_block_signature(block: Block, block_hash: bytes, chain_id: str) -> bool:
    return verify_as(SignedKind.BLOCK, chain_id, block.header.miner, block.signature, block_hash)


_block_decoder = msgspec.msgpack.Decoder(Block)


def encode_block(block: Block) -> bytes:
    return canonical_bytes(block)


def decode_block(data: bytes) -> Block:
    try:
        return _block_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise MalformedData(f"malformed block: {error}") from None
