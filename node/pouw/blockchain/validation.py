"""Block rules that need no ledger state: shape, size, merkle root, seal and signature; and the
header rules that need only the ancestors: linkage, time and difficulty."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import median_low

from pouw.blockchain.block import (
    BLOCK_VERSION,
    Block,
    BlockHeader,
    has_valid_block_signature,
    meets_difficulty,
    merkle_root,
)
from pouw.blockchain.difficulty import next_difficulty
from pouw.blockchain.params import ChainParams
from pouw.blockchain.transactions import Reward
from pouw.crypto import sha256
from pouw.errors import InvalidBlock, Reason

SealRule = Callable[[Block], None]
"""An extra seal check (the PoUW nonce rule); raises InvalidBlock when the seal is wrong."""


def check_block_alone(
    block: Block, block_hash: bytes, txids: list[bytes], encoded_size: int, params: ChainParams
) -> None:
    header = block.header
    height = header.height

    def reject(reason: Reason, detail: str = "") -> InvalidBlock:
        return InvalidBlock(reason, detail, height)

    if header.version != BLOCK_VERSION:
        raise reject(Reason.BAD_VERSION, f"version {header.version}")
    body_size = encoded_size - len(block.checkpoint)
    if body_size > params.max_block_bytes:
        raise reject(Reason.OVERSIZED_BLOCK, f"{body_size} bytes > {params.max_block_bytes}")
    if len(block.checkpoint) > params.max_checkpoint_bytes:
        raise reject(Reason.OVERSIZED_CHECKPOINT, f"{len(block.checkpoint)} bytes")
    if not block.transactions or not isinstance(block.transactions[0].payload, Reward):
        raise reject(Reason.MISSING_REWARD, "the first transaction must be the block reward")
    if any(isinstance(tx.payload, Reward) for tx in block.transactions[1:]):
        raise reject(Reason.EXTRA_REWARD, "only the first transaction may be a reward")
    if len(set(txids)) != len(txids):
        raise reject(Reason.DUPLICATE_TRANSACTION)
    if merkle_root(txids) != header.merkle_root:
        raise reject(Reason.BAD_MERKLE_ROOT, "merkle root does not match the transactions")
    if sha256(block.iteration_message) != header.iteration_hash:
        raise reject(Reason.BAD_ITERATION_HASH, "header does not commit to the iteration message")
    if not meets_difficulty(header.seal_hash(), header.difficulty):
        raise reject(
            Reason.TARGET_NOT_MET, f"seal hash above the target of difficulty {header.difficulty}"
        )
    if not has_valid_block_signature(block, block_hash, params.chain_id):
        raise reject(Reason.BAD_BLOCK_SIGNATURE, "not signed by the miner in the header")


def check_header_in_context(
    header: BlockHeader,
    ancestors: Sequence[BlockHeader],
    params: ChainParams,
    now_ms: int,
) -> None:
    """`ancestors` ends with the parent, oldest first, and holds at least the retarget and
    median-time windows."""
    parent = ancestors[-1]
    height = header.height
    if header.prev_hash != parent.hash():
        raise InvalidBlock(Reason.WRONG_PREV_HASH, "prev_hash is not the parent's hash", height)
    if header.height != parent.height + 1:
        raise InvalidBlock(Reason.WRONG_HEIGHT, f"parent is at {parent.height}", height)
    median_past = median_low([h.timestamp_ms for h in ancestors[-params.median_time_window :]])
    if header.timestamp_ms <= median_past:
        raise InvalidBlock(
            Reason.TIMESTAMP_OUT_OF_BOUNDS,
            f"{header.timestamp_ms} <= median past {median_past}",
            height,
        )
    if header.timestamp_ms > now_ms + params.max_future_drift_ms:
        raise InvalidBlock(
            Reason.TIMESTAMP_OUT_OF_BOUNDS,
            f"{header.timestamp_ms} is too far in the future",
            height,
        )
    expected = next_difficulty(params, ancestors)
    if header.difficulty != expected:
        raise InvalidBlock(
            Reason.WRONG_DIFFICULTY, f"{header.difficulty} != required {expected}", height
        )
