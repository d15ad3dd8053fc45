"""What each main-chain block means for this node: its own counters (blocks mined, rewards
earned), the blocks mined with each task's work, the reputation of miners proven to cheat (a
SLASH on chain is proof every node learns), and the final models a task's closing lets go of.
Blocks leaving the main chain in a reorg are counted back out.

A task's payouts are the ledger's (no transaction carries them): a block whose TASK_RESULT
settled a task is counted with what the main-chain state says that settlement paid, and that
amount is remembered, so that the block leaving the main chain takes back what it brought."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pouw.blockchain.block import Block
from pouw.blockchain.chain import Chain
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.slashing import offender
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import Reward, SlashEvidence, TaskResult
from pouw.crypto import address_of
from pouw.errors import MalformedData
from pouw.node.context import NodeContext


class ChainTally:
    def __init__(
        self,
        context: NodeContext,
        state: Callable[[], LedgerState],
        reopened: Callable[[TaskRecord], None] = lambda record: None,
    ) -> None:
        self.context = context
        self.state = state
        """The main chain's state, as the events find it (after the whole reorg)."""
        self.reopened = reopened
        """Told a task a reorg opened again after its final models were let go of: the node
        takes back those left on disk (`pouw.node.intake.restore_models`)."""
        self._settlement_pay: dict[bytes, int] = {}
        """Block hash -> what the settlements in it paid this node, as counted."""
        self._released: dict[bytes, list[bytes]] = {}
        """Block hash -> the tasks whose final models were let go of when it connected."""
        context.events.block_connected.subscribe(lambda block: self.count(block, +1))
        context.events.block_disconnected.subscribe(lambda block: self.count(block, -1))

    def recount(self, chain: Chain) -> None:
        """Count the stored main chain, after a restart."""
        for height in range(1, chain.height + 1):
            block = chain.block_at(height)
            if block is not None:
                self.count(block, +1)

    def count(self, block: Block, sign: int) -> None:
        context = self.context
        counters, address = context.counters, context.address
        if block.header.miner == context.key.public_key:
            counters.blocks_mined += sign
        results: set[bytes] = set()
        for tx in block.transactions:
            payload = tx.payload
            if isinstance(payload, Reward) and payload.recipient == address:
                counters.rewards_earned += sign * payload.amount
            if isinstance(payload, TaskResult):
                results.add(payload.task_id)
            if isinstance(payload, SlashEvidence) and sign > 0:
                cheat = offender(payload)
                if cheat is not None:
                    context.reputation.rejected(address_of(cheat))
        self._count_settlements(block, results, sign)
        self._release_closed_tasks(block, sign)
        if block.iteration_message:
            with contextlib.suppress(MalformedData):
                message = decode_iteration_message(block.iteration_message)
                context.tasks.record_block(message.task_id, sign)

    def _count_settlements(self, block: Block, task_ids: set[bytes], sign: int) -> None:
        if sign < 0:
            self.context.counters.rewards_earned -= self._settlement_pay.pop(block.hash(), 0)
            return
        tasks, address, earned = self.state().tasks, self.context.address, 0
        for task_id in task_ids:
            record = tasks.get(task_id)
            if record and record.status == "completed" and record.closed_at == block.height:
                earned += sum(p.amount for p in record.payouts if p.recipient == address)
        if earned:
            self._settlement_pay[block.hash()] = earned
            self.context.counters.rewards_earned += earned

    def _release_closed_tasks(self, block: Block, sign: int) -> None:
        """A task no longer open on the main chain (settled by a majority, or refunded) lets go
        of the final models held for it: the bytes leave the budget, and the unranked models
        (all of a refunded task's) leave the disk. A reorg that reopens the task takes back
        what is left on disk: the ranked models, all a settled ranking needed (docs/protocol.md
        8.5)."""
        tasks = self.state().tasks
        if sign < 0:
            for task_id in self._released.pop(block.hash(), []):
                record = tasks.get(task_id)
                if record is not None and record.status == "open":
                    self.reopened(record)
            return
        released = []
        for task_id in self.context.tasks.holding():
            record = tasks.get(task_id)
            if record is None or record.status == "open":
                continue
            result = record.result if record.status == "completed" else None
            ranked = {entry.model_hash for entry in result.ranking} if result else set()
            self.context.tasks.settle(task_id, ranked)
            released.append(task_id)
        if released:
            self._released[block.hash()] = released
