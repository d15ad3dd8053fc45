"""The verifier role: every node re-executes each peer's block before taking it (the
intake's first check); a verifier also gossips a signed verdict on each, and reports the miner
of a block whose re-execution shows fake work, with the signed block itself as the evidence
(`pouw.blockchain.slashing`: every node re-runs it, and finds it in its cache, having rejected
that block already).
"""

from __future__ import annotations

import logging

import msgspec

from pouw.blockchain.block import Block, encode_block
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.transactions import MAX_STATEMENT_BYTES, FailedReexecution, SlashEvidence
from pouw.crypto import address_of
from pouw.errors import InvalidBlock, InvalidTransaction, MalformedData
from pouw.network.messages import ItemKind
from pouw.node.announcer import Announcer
from pouw.node.context import NodeContext
from pouw.node.intake import Intake
from pouw.node.items import BlockVerdict, encode_item, sign_verdict
from pouw.node.ledger import Ledger

log = logging.getLogger("pouw.node")


class VerifierRole:
    def __init__(
        self, context: NodeContext, ledger: Ledger, announcer: Announcer, intake: Intake
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.announcer = announcer
        self.intake = intake
        self._reported: set[bytes] = set()
        events = context.events
        events.block_accepted.subscribe(self._passed)
        events.block_rejected.subscribe(self._failed)

    def _passed(self, block: Block) -> None:
        self.context.counters.verified()
        self._tell(block, valid=True)

    def _failed(self, block: Block, error: InvalidBlock) -> None:
        self._tell(block, valid=False, reason=error.reason)
        if error.reason.fake_work:
            self.context.counters.attack("fake_work")
            self._report(block, error)

    def _tell(self, block: Block, *, valid: bool, reason: str = "") -> None:
        key, chain_id = self.context.key, self.context.params.chain_id
        verdict = sign_verdict(
            key, chain_id, BlockVerdict(block.hash(), key.public_key, valid, reason)
        )
        self.intake.attestations.add(verdict, block_known=valid)  # a rejected block is not kept
        self.announcer.announce(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict))

    def _report(self, block: Block, error: InvalidBlock) -> None:
        """Slash the ticket the block's IT_RES names, with the signed block as the proof."""
        state, address = self.ledger.chain.state, self.context.address
        if not any(t.owner == address for t in state.tickets.values()):
            return  # only a ticket holder may report
        try:
            ticket_id = decode_iteration_message(block.iteration_message).ticket_id
        except MalformedData:
            return
        if ticket_id not in state.tickets or ticket_id in self._reported:
            return
        proof = encode_block(msgspec.structs.replace(block, transactions=()))
        if len(proof) > MAX_STATEMENT_BYTES:
            log.warning(
                "fake work at height %d: its block is too large to be evidence", block.height
            )
            return
        try:
            self.ledger.submit(SlashEvidence(ticket_id, FailedReexecution(proof)))
        except InvalidTransaction as refused:
            log.warning("slash of ticket %s refused: %s", ticket_id.hex()[:16], refused)
            return
        self._reported.add(ticket_id)
        miner = address_of(block.header.miner)
        log.info("slashing %s: its block at height %d %s", miner, block.header.height, error.reason)
