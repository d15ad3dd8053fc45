"""Verifiers' verdicts on blocks: who may attest, and at most one verdict per (block, verifier).

A verdict counts only from a key holding a live VERIFIER ticket in the node's main-chain state;
on a block of a client task whose draw is known, only from a verifier drawn for that task (on
the bootstrap task's blocks, and where the task or its draw is not known, any live verifier).
The intake checks this on receipt; the block view checks it again when it shows the verdicts,
because a verdict may arrive before its block (its draw unknown then), and tickets and draws
change with the main chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import FIFOCache

from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.state import LedgerState
from pouw.crypto import address_of
from pouw.economics.selection import TaskAssignment
from pouw.errors import MalformedData
from pouw.node.items import BlockVerdict
from pouw.roles import NodeRole

ATTESTED_BLOCKS = 4096
"""Blocks the node knows whose verdicts it keeps, oldest forgotten first."""
PENDING_BLOCKS = 256
"""Blocks the node does not know yet whose verdicts it keeps: kept apart, so that verdicts on
made-up block hashes can only push out each other, never the verdicts on real blocks."""
MAX_ATTESTERS = 64
"""Verdicts kept per block: the draw seats 8 verifiers; a bootstrap block may have more."""

Draw = Callable[[TaskRecord], TaskAssignment | None]


@dataclass(frozen=True)
class Attestation:
    """One verifier's verdict on a block, as the block view shows it."""

    verifier: str
    """The verifier's address."""
    valid: bool
    reason: str


def block_task(block: Block) -> bytes | None:
    """The task a block's iteration trains (None for a block without one)."""
    if not block.iteration_message:
        return None
    with contextlib.suppress(MalformedData):
        return decode_iteration_message(block.iteration_message).task_id
    return None


def may_attest(
    verifier: bytes,
    block: Block | None,
    state: LedgerState,
    draw: Draw,
    bootstrap: bytes | None,
) -> bool:
    """Whether `verifier`'s verdict on `block` (None: not known yet) counts."""
    address = address_of(verifier)
    if not any(t.owner == address for t in state.live_tickets(NodeRole.VERIFIER)):
        return False
    task_id = None if block is None else block_task(block)
    if task_id is None or task_id == bootstrap:
        return True
    record = state.tasks.get(task_id)
    assignment = None if record is None else draw(record)
    return assignment is None or assignment.holds(NodeRole.VERIFIER, address)


def verified(attestations: list[Attestation]) -> bool | None:
    """The block view's `verified`: None without an attestation, False when any says the block
    is invalid, else True."""
    if not attestations:
        return None
    return all(attestation.valid for attestation in attestations)


class AttestationBook:
    """The verdicts kept on recent blocks, one per (block, verifier), bounded."""

    def __init__(
        self,
        blocks: int = ATTESTED_BLOCKS,
        pending: int = PENDING_BLOCKS,
        per_block: int = MAX_ATTESTERS,
    ) -> None:
        self._known: FIFOCache[bytes, dict[bytes, BlockVerdict]] = FIFOCache(blocks)
        self._pending: FIFOCache[bytes, dict[bytes, BlockVerdict]] = FIFOCache(pending)
        self._per_block = per_block

    def _kept(self, block_hash: bytes) -> dict[bytes, BlockVerdict]:
        return self._known.get(block_hash) or self._pending.get(block_hash) or {}

    def add(self, verdict: BlockVerdict, *, block_known: bool = True) -> bool:
        """Keep `verdict`: False when this verifier's verdict on the block is kept already (a
        second one is not counted again), or the block has its fill of verdicts."""
        kept = self._kept(verdict.block_hash)
        if verdict.verifier in kept or len(kept) >= self._per_block:
            return False
        if not kept:
            cache = self._known if block_known else self._pending
            cache[verdict.block_hash] = kept
        kept[verdict.verifier] = verdict
        return True

    def verdicts(self, block_hash: bytes) -> list[BlockVerdict]:
        """Every verdict kept on the block, one per verifier, in arrival order."""
        return list(self._kept(block_hash).values())

    def shown(
        self, block: Block, state: LedgerState, draw: Draw, bootstrap: bytes | None
    ) -> list[Attestation]:
        """The block's verdicts from verifiers that may attest it now, ordered by address."""
        entitled = [
            Attestation(address_of(v.verifier), v.valid, v.reason)
            for v in self.verdicts(block.hash())
            if may_attest(v.verifier, block, state, draw, bootstrap)
        ]
        return sorted(entitled, key=lambda attestation: attestation.verifier)
