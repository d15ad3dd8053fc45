"""What each main-chain block means for this node: its own counters (blocks mined, rewards
earned), the blocks mined with each task's work, the reputation of miners proven to cheat (a
SLASH on chain is proof every node learns), and the final models a task's result lets go of.
Blocks leaving the main chain in a reorg are counted back out."""

from __future__ import annotations

import contextlib

from pouw.blockchain.block import Block
from pouw.blockchain.chain import Chain
from pouw.blockchain.transactions import Reward, SlashEvidence, TaskResult
from pouw.crypto import HASH_SIZE, address_of
from pouw.errors import MalformedData
from pouw.mining.messages import decode_iteration_message
from pouw.node.context import NodeContext


class ChainTally:
    def __init__(self, context: NodeContext) -> None:
        self.context = context
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
        for tx in block.transactions:
            payload = tx.payload
            if isinstance(payload, Reward) and payload.recipient == address:
                counters.rewards_earned += sign * payload.amount
            if isinstance(payload, TaskResult):
                for payout in payload.payouts:
                    if payout.recipient == address:
                        counters.rewards_earned += sign * payout.amount
                if sign > 0:
                    ranked = {entry.model_hash for entry in payload.ranking}
                    context.tasks.settle(payload.task_id, ranked)
            if isinstance(payload, SlashEvidence) and sign > 0:
                # evidence = IT_RES || H(update)
                with contextlib.suppress(MalformedData):
                    cheat = decode_iteration_message(payload.evidence[:-HASH_SIZE])
                    context.reputation.rejected(address_of(cheat.miner))
        if block.iteration_message:
            with contextlib.suppress(MalformedData):
                message = decode_iteration_message(block.iteration_message)
                context.tasks.record_block(message.task_id, sign)
