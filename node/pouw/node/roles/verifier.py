"""The verifier role: every node re-executes each peer's block before taking it (the
intake's first check); a verifier also gossips a signed verdict on each, and reports the miner
of a block whose re-execution shows fake work with its signed IT_RES as slashing evidence.

A miner announces its block before the batch carrying the block's IT_RES, so a report waits
(bounded) for that evidence to arrive.
"""

from __future__ import annotations

import logging

from cachetools import FIFOCache

from pouw.blockchain.block import Block
from pouw.blockchain.transactions import SlashEvidence
from pouw.budgets import RECENT_ITEM_BYTES_PER_KIND
from pouw.crypto import address_of, sha256
from pouw.errors import InvalidBlock, InvalidTransaction
from pouw.network.messages import ItemKind
from pouw.node.announcer import Announcer
from pouw.node.context import NodeContext
from pouw.node.intake import Intake
from pouw.node.items import BlockVerdict, IterationRecord, encode_item, sign_verdict
from pouw.node.ledger import Ledger
from pouw.roles import NodeRole

log = logging.getLogger("pouw.node")

AWAITED_EVIDENCE = 256
"""Rejected blocks whose IT_RES has not arrived yet, kept to slash once it does."""


class VerifierRole:
    def __init__(
        self, context: NodeContext, ledger: Ledger, announcer: Announcer, intake: Intake
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.announcer = announcer
        self.intake = intake
        self._records: FIFOCache[bytes, IterationRecord] = FIFOCache(
            RECENT_ITEM_BYTES_PER_KIND, getsizeof=record_bytes
        )
        """Recent IT_RES by message hash, the oldest forgotten past RECENT_ITEM_BYTES_PER_KIND
        of them: the evidence a report attaches."""
        self._awaiting: FIFOCache[bytes, tuple[Block, InvalidBlock]] = FIFOCache(AWAITED_EVIDENCE)
        self._reported: set[bytes] = set()
        events = context.events
        events.block_accepted.subscribe(self._passed)
        events.block_rejected.subscribe(self._failed)
        events.iteration_record.subscribe(self._keep_record)

    def _passed(self, block: Block) -> None:
        self.context.counters.verified()
        self._tell(block, valid=True)

    def _failed(self, block: Block, error: InvalidBlock) -> None:
        self._tell(block, valid=False, reason=error.reason)
        if error.reason.fake_work:
            self.context.counters.attack("fake_work")
            self._report(block, error)

    def _tell(self, block: Block, *, valid: bool, reason: str = "") -> None:
        key = self.context.key
        verdict = sign_verdict(key, BlockVerdict(block.hash(), key.public_key, valid, reason))
        self.intake.attestations.add(verdict, block_known=valid)  # a rejected block is not kept
        self.announcer.announce(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict))

    def _keep_record(self, record: IterationRecord) -> None:
        message_id = sha256(record.message)
        if record_bytes(record) <= RECENT_ITEM_BYTES_PER_KIND:
            self._records[message_id] = record
        awaited = self._awaiting.pop(message_id, None)
        if awaited is not None:
            self._report(*awaited)

    def _report(self, block: Block, error: InvalidBlock) -> None:
        """Slash the block's miner with its signed IT_RES, once that has arrived."""
        state, address = self.ledger.chain.state, self.context.address
        if not state.holds_role(address, NodeRole.VERIFIER, NodeRole.SUPERVISOR):
            return
        message_id = sha256(block.iteration_message)
        record = self._records.get(message_id)
        if record is None:
            self._awaiting[message_id] = (block, error)
            return
        miner = address_of(block.header.miner)
        tickets = [
            t
            for t in state.live_tickets(NodeRole.MINER)
            if t.owner == miner and t.ticket_id not in self._reported
        ]
        if not tickets:
            return
        evidence = SlashEvidence(
            ticket_id=tickets[0].ticket_id,
            reason=error.reason,
            evidence=record.message + sha256(record.update),
            evidence_signature=record.signature,
        )
        try:
            self.ledger.submit(evidence)
        except InvalidTransaction as refused:
            log.warning("slash of %s refused: %s", miner, refused)
            return
        self._reported.add(tickets[0].ticket_id)
        log.info("slashing %s: its block at height %d %s", miner, block.header.height, error.reason)


def record_bytes(record: IterationRecord) -> int:
    return len(record.message) + len(record.update)
