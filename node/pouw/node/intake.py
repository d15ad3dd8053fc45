"""What peers send a node: the network's handler. Each item (block, transaction, IT_RES batch,
final model, verdict) is decoded, its id and signature checked, judged (blocks and
transactions by the ledger, after any block check a role installed; verdicts by who may attest,
attestations.py), and told as an event; synced blocks are imported in order. The verdict goes
back to the network, which relays what was accepted and scores the sender of what was rejected.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from pouw.blockchain.block import Block, decode_block
from pouw.blockchain.chain import AddStatus
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import decode_transaction, encode_transaction
from pouw.budgets import final_model_bytes
from pouw.crypto import address_of
from pouw.errors import InvalidBlock, InvalidTransaction, MalformedData, Reason, ReorgTooDeep
from pouw.monitoring.health import HealthTracker
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.node.announcer import Announcer
from pouw.node.attestations import Attestation, AttestationBook, Draw, may_attest
from pouw.node.context import NodeContext
from pouw.node.items import (
    BlockVerdict,
    FinalModel,
    IterationBatch,
    decode_item,
    encode_item,
    has_valid_signature,
)
from pouw.node.ledger import Ledger
from pouw.node.locator import block_locator, blocks_after
from pouw.node.waiting_models import WaitingModels

log = logging.getLogger("pouw.node")


class BlockCheck(Protocol):
    """A check a role runs on a peer's block before the ledger takes it (a verifier re-runs
    it): None lets the block through; an ItemResult is the answer to the network instead."""

    async def __call__(self, block: Block, peer: str) -> ItemResult | None: ...


class Intake:
    def __init__(
        self,
        context: NodeContext,
        ledger: Ledger,
        announcer: Announcer,
        health: HealthTracker,
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.announcer = announcer
        self.health = health
        self._chain_id = context.params.chain_id
        self.block_checks: list[BlockCheck] = [self.reexecute]
        """Every node re-executes a peer's block (in the checking thread) before taking it;
        roles add their own checks after."""
        self.attestations = AttestationBook()
        """Verifiers' verdicts on recent blocks, one per verifier (this node's own included)."""
        self.waiting = WaitingModels()
        context.events.chain_changed.subscribe(lambda _: self.judge_waiting_models())

    # -- what the network asks of the node ---------------------------------------------------------

    def chain_info(self) -> ChainInfo:
        chain = self.ledger.chain
        return ChainInfo(
            chain_id=self.context.params.chain_id,
            genesis_hash=chain.genesis_hash,
            height=chain.height,
            tip_hash=chain.tip.hash,
            total_work=chain.tip.total_work,
        )

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool:
        if self.announcer.knows(kind, item_id):
            return True
        if kind == ItemKind.BLOCK:
            return self.ledger.chain.contains(item_id)
        if kind == ItemKind.TX:
            return item_id in self.ledger.mempool
        return False

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        known = self.announcer.payload(kind, item_id)
        if known is not None:
            return known
        if kind == ItemKind.BLOCK:
            return self.ledger.chain.store.block_bytes(item_id)
        if kind == ItemKind.TX:
            tx = self.ledger.mempool.get(item_id)
            return None if tx is None else encode_transaction(tx)
        return None

    def block_locator(self) -> list[bytes]:
        return block_locator(self.ledger.chain)

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return blocks_after(self.ledger.chain, locator, limit)

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        started = time.perf_counter()
        result = await self._on_item(kind, item_id, payload, peer)
        self.health.record(time.perf_counter() - started, result.verdict != Verdict.REJECTED)
        return result

    async def _on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        try:
            if kind == ItemKind.BLOCK:
                started = time.perf_counter()
                result = await self._on_block(item_id, payload, peer)
                if result.verdict == Verdict.REJECTED:
                    elapsed = time.perf_counter() - started
                    self.context.metrics.block_rejection_seconds.observe(elapsed)
                return result
            if kind == ItemKind.TX:
                return self._on_transaction(item_id, payload)
            if kind == ItemKind.ITERATION:
                return self._on_iteration(item_id, payload)
            if kind == ItemKind.MODEL:
                return self._on_final_model(item_id, payload)
            return self._on_verdict(item_id, payload)
        except MalformedData:
            return rejected(Reason.MALFORMED)

    # -- blocks ------------------------------------------------------------------------------------

    async def _on_block(self, item_id: bytes, payload: bytes, peer: str) -> ItemResult:
        block = decode_block(payload)
        if block.hash() != item_id:
            return rejected(Reason.ID_MISMATCH)
        chain = self.ledger.chain
        if chain.contains(item_id):
            return ItemResult(Verdict.KNOWN)
        if chain.entry(block.header.prev_hash) is None:
            return ItemResult(Verdict.ORPHAN)
        for check in self.block_checks:
            answer = await check(block, peer)
            if answer is not None:
                return answer
        try:
            update = self.ledger.accept_block(block, payload)
        except InvalidBlock as error:
            return self.reject_block(block, error)
        except ReorgTooDeep as refused:
            return self.refuse_reorg(refused)
        if update.status == AddStatus.ORPHAN:
            return ItemResult(Verdict.ORPHAN)
        if update.status == AddStatus.DUPLICATE:
            return ItemResult(Verdict.KNOWN)
        self.context.reputation.valid(address_of(block.header.miner))
        self.context.events.block_accepted.emit(block)
        return ItemResult(Verdict.ACCEPTED)

    async def reexecute(self, block: Block, peer: str) -> ItemResult | None:
        """Re-run the block's iteration off the loop; the chain's seal rule then finds it
        verified. None when it holds."""
        del peer
        started = time.perf_counter()
        try:
            await self.context.background.check(self.ledger.seal.reexecute, block)
        except InvalidBlock as error:
            return self.reject_block(block, error)
        finally:
            self.context.metrics.verification_seconds.observe(time.perf_counter() - started)
        return None

    def reject_block(self, block: Block, error: InvalidBlock) -> ItemResult:
        """A peer's block failed a check: counted, its miner's reputation lowered, told. Every
        node re-executes before it relays, so the sender is blamed, unless the rule is one an
        honest relay may break by being on another branch or a block ahead."""
        self.context.counters.rejected(error.reason)
        self.context.reputation.rejected(address_of(block.header.miner))
        self.context.events.block_rejected.emit(block, error)
        if error.reason.relay_may_cause:
            return ItemResult(Verdict.KNOWN, error.reason)
        return rejected(error.reason)

    def refuse_reorg(self, refused: ReorgTooDeep) -> ItemResult:
        """A valid block whose branch would reorganise past the limit: stored as a side branch
        and counted, but not the sender's fault, so it is a known item, not a rejected one."""
        self.context.counters.rejected(refused.reason)
        log.warning("%s", refused)
        return ItemResult(Verdict.KNOWN, refused.reason)

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        """Import a batch in order. Where a role checks blocks, each goes through those checks
        like a gossiped one (so every block a verifier passes on has been re-run, however it
        arrived); else the batch is stored in one transaction."""
        if self.block_checks:
            return await self._import_checked(blocks, peer)
        with self.ledger.chain.batch():
            return self._import(blocks)

    async def _import_checked(self, blocks: list[bytes], peer: str) -> ItemResult:
        for encoded in blocks:
            try:
                block_hash = decode_block(encoded).hash()
            except MalformedData:
                return rejected(Reason.MALFORMED)
            if self.ledger.chain.contains(block_hash):
                continue
            result = await self._on_block(block_hash, encoded, peer)
            if result.verdict in (Verdict.REJECTED, Verdict.ORPHAN):
                return result
        return ItemResult(Verdict.ACCEPTED)

    def _import(self, blocks: list[bytes]) -> ItemResult:
        for encoded in blocks:
            try:
                block = decode_block(encoded)
            except MalformedData:
                return rejected(Reason.MALFORMED)
            if self.ledger.chain.contains(block.hash()):
                continue
            try:
                update = self.ledger.accept_block(block, encoded)
            except InvalidBlock as error:
                self.context.counters.rejected(error.reason)
                return rejected(error.reason)
            except ReorgTooDeep as refused:
                return self.refuse_reorg(refused)
            if update.status == AddStatus.ORPHAN:
                return ItemResult(Verdict.ORPHAN)
        return ItemResult(Verdict.ACCEPTED)

    # -- transactions ------------------------------------------------------------------------------

    def _on_transaction(self, item_id: bytes, payload: bytes) -> ItemResult:
        tx = decode_transaction(payload)
        if tx.txid() != item_id:
            return rejected(Reason.ID_MISMATCH)
        if item_id in self.ledger.mempool:
            return ItemResult(Verdict.KNOWN)
        try:
            self.ledger.admit(tx, payload)
        except InvalidTransaction as error:
            if error.reason.relay_may_cause:
                return ItemResult(Verdict.KNOWN)
            return rejected(error.reason)
        self.announcer.remember(ItemKind.TX, item_id, payload)
        self.ledger.refresh_template_soon()
        return ItemResult(Verdict.ACCEPTED)

    # -- what miners and verifiers publish ---------------------------------------------------------

    def _on_iteration(self, item_id: bytes, payload: bytes) -> ItemResult:
        batch = decode_item(IterationBatch, payload)
        if batch.item_id() != item_id:
            return rejected(Reason.ID_MISMATCH)
        if self.announcer.knows(ItemKind.ITERATION, item_id):
            return ItemResult(Verdict.KNOWN)
        if not has_valid_signature(batch, batch.miner, self._chain_id):
            return rejected(Reason.BAD_SIGNATURE)
        events, tasks = self.context.events, self.context.tasks
        on_chain = self.ledger.chain.state.tasks
        for record in batch.records:
            message = decode_iteration_message(record.message)
            if message.miner != batch.miner:
                return rejected(Reason.FOREIGN_ITERATION)
            events.iteration_record.emit(record)
            if message.task_id not in on_chain:
                continue  # relayed, but no progress is kept for a task not (yet) on chain
            tasks.record_iteration(message)
            events.peer_iteration.emit(message, record)
        self.announcer.remember(ItemKind.ITERATION, item_id, payload)
        return ItemResult(Verdict.ACCEPTED)

    def _on_final_model(self, item_id: bytes, payload: bytes) -> ItemResult:
        final = decode_item(FinalModel, payload)
        if final.item_id() != item_id:
            return rejected(Reason.ID_MISMATCH)
        if self.announcer.knows(ItemKind.MODEL, item_id):
            return ItemResult(Verdict.KNOWN)
        record = self.ledger.chain.state.tasks.get(final.task_id)
        if record is None or record.drawn is None:  # a relay ahead of us: not its fault
            if not has_valid_signature(final, final.miner, self._chain_id):
                return rejected(Reason.BAD_SIGNATURE)
            refused = self.waiting.park(final, self.ledger.chain.height)
            if refused is not None:
                return over_budget(self.context, "waiting_final_models", refused)
            return ItemResult(Verdict.KNOWN, Reason.TASK_NOT_DRAWN)
        result = self._take_drawn_miners_model(final, record)
        if result.verdict == Verdict.ACCEPTED:
            self.announcer.remember(ItemKind.MODEL, item_id, payload)
        return result

    def _take_drawn_miners_model(self, final: FinalModel, record: TaskRecord) -> ItemResult:
        assert record.drawn is not None
        if all(ticket.public_key != final.miner for ticket in record.drawn.miners):
            return rejected(Reason.NOT_DRAWN_MINER)
        if not has_valid_signature(final, final.miner, self._chain_id):
            return rejected(Reason.BAD_SIGNATURE)
        refused = take_final_model(self.context, final, final_model_bytes(record.spec.model))
        if refused is not None:
            return over_budget(self.context, "final_models", refused)
        return ItemResult(Verdict.ACCEPTED)

    def judge_waiting_models(self) -> None:
        """The waiting final models whose task the chain now decides: taken (and announced)
        when their miner was drawn for the open task, let go otherwise."""
        tasks = self.ledger.chain.state.tasks

        def decided(task_id: bytes) -> bool | None:
            record = tasks.get(task_id)
            if record is None or (record.status == "open" and record.drawn is None):
                return None
            return record.status == "open"

        for final in self.waiting.ready(decided, self.ledger.chain.height):
            taken = self._take_drawn_miners_model(final, tasks[final.task_id])
            if taken.verdict == Verdict.ACCEPTED:
                self.announcer.announce(ItemKind.MODEL, final.item_id(), encode_item(final))

    def _on_verdict(self, item_id: bytes, payload: bytes) -> ItemResult:
        verdict = decode_item(BlockVerdict, payload)
        if verdict.item_id() != item_id:
            return rejected(Reason.ID_MISMATCH)
        if self.announcer.knows(ItemKind.VERDICT, item_id):
            return ItemResult(Verdict.KNOWN)
        if not has_valid_signature(verdict, verdict.verifier, self._chain_id):
            return rejected(Reason.BAD_SIGNATURE)
        block = self.ledger.chain.block(verdict.block_hash)
        if not may_attest(verdict.verifier, block, *self._attesting()):
            return rejected(Reason.NOT_A_VERIFIER)
        if not self.attestations.add(verdict, block_known=block is not None):
            return ItemResult(Verdict.KNOWN)  # this verifier's verdict on the block is counted
        self.announcer.remember(ItemKind.VERDICT, item_id, payload)
        return ItemResult(Verdict.ACCEPTED)

    def _attesting(self) -> tuple[LedgerState, Draw, bytes | None]:
        """What decides who may attest a block: the main-chain state and the draw."""
        return self.ledger.chain.state, self.ledger.draw, bootstrap_task_id(self.context.params)

    def block_attestations(self, block: Block) -> list[Attestation]:
        """The verdicts on `block` from verifiers that may attest it, as the block view shows."""
        return self.attestations.shown(block, *self._attesting())

    def restore_final_models(self) -> None:
        """Final models this node stored for tasks still open: an evaluator restarted before
        its TASK_RESULT was mined evaluates them again instead of leaving the task open. Those
        of tasks its chain does not hold yet (it lost the last blocks in a crash) wait."""
        tasks = self.ledger.chain.state.tasks
        for task_id in self.context.tasks.stored_tasks():
            record = tasks.get(task_id)
            if record is not None and record.drawn is not None:
                if record.status == "open":
                    restore_models(self.context, record)
                continue
            for final in self.context.tasks.stored_models(task_id):
                if has_valid_signature(final, final.miner, self._chain_id):
                    self.waiting.park(final, self.ledger.chain.height)


def restore_models(context: NodeContext, record: TaskRecord) -> None:
    """Take again the final models of the task stored on disk (signatures checked)."""
    for final in context.tasks.stored_models(record.task_id):
        if has_valid_signature(final, final.miner, context.params.chain_id):
            take_final_model(context, final, final_model_bytes(record.spec.model))


def take_final_model(context: NodeContext, final: FinalModel, largest: int) -> Reason | None:
    """Store a final model in the task book and tell it; or say why its bytes do not fit (more
    than `largest`, its task's size, or past the budget)."""
    refused = context.tasks.store_model(final, largest)
    if refused is None:
        context.events.final_model.emit(final)
    return refused


def over_budget(context: NodeContext, store: str, reason: Reason) -> ItemResult:
    """An item a store's byte budget refused: counted; past its author's share it is the
    sender's fault (rejected, scored), past the store's total it is not (known, dropped)."""
    context.metrics.over_budget.labels(store, reason).inc()
    if reason.relay_may_cause:
        return ItemResult(Verdict.KNOWN, reason)
    return rejected(reason)


def rejected(reason: Reason) -> ItemResult:
    return ItemResult(Verdict.REJECTED, reason)
