"""What a node shows of itself, read-only: its status and economics (the seed API), its
blocks, and its view of each task (phase, miners' progress, result), as plain values the API
serialises and the CLI prints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.transactions import COIN, BuyTicket, PayForTask
from pouw.crypto import address_of
from pouw.mining.miner import MiningStats
from pouw.node.attestations import block_task, verified
from pouw.node.context import NodeContext
from pouw.node.intake import Intake
from pouw.node.ledger import Ledger
from pouw.node.views import TaskView, TicketView
from pouw.roles import NodeRole


@dataclass(frozen=True)
class Liveness:
    """What the node's lifecycle says right now (the composition root knows it)."""

    running: bool
    mining: bool
    activity: str
    """What the miner does, in words."""
    stats: MiningStats
    peers: int
    p2p_port: int | None


class NodeStatus:
    def __init__(self, context: NodeContext, ledger: Ledger, intake: Intake) -> None:
        self.context = context
        self.ledger = ledger
        self.intake = intake

    def status(self, live: Liveness) -> dict[str, Any]:
        context, counters = self.context, self.context.counters
        chain = self.ledger.chain if self.ledger.is_open else None
        return {
            "node_id": context.node_id,
            "role": context.role.value,
            "attack": context.config.attack,
            "address": context.address,
            "is_running": live.running,
            "is_mining": live.mining,
            "mining": live.activity,
            "blockchain_height": chain.height if chain else 0,
            "tip": chain.tip.hash.hex() if chain else "",
            "peer_count": live.peers,
            "p2p_port": live.p2p_port,
            "mempool": len(self.ledger.mempool),
            "stats": {
                "blocks_mined": counters.blocks_mined,
                "rewards_earned": counters.rewards_earned / COIN,
                "iterations": live.stats.iterations,
                "blocks_verified": counters.blocks_verified,
                "blocks_rejected": counters.blocks_rejected,
                "loss": _finite(live.stats.last_loss),
                "accuracy": _finite(live.stats.last_accuracy),
                "attacks_detected": dict(counters.attacks_detected),
            },
        }

    def economics(self) -> dict[str, Any]:
        state, address = self.ledger.chain.state, self.context.address
        tickets = [t for t in state.live_tickets() if t.owner == address]
        reputation = self.context.reputation
        return {
            "address": address,
            "balance": state.balance(address) / COIN,
            "locked": state.account(address).locked / COIN,
            "staked": bool(tickets),
            "stake_amount": sum(t.amount for t in tickets) / COIN,
            "tickets": [
                {"ticket_id": t.ticket_id.hex(), "role": t.role.value, "amount": t.amount / COIN}
                for t in tickets
            ],
            "reputation": reputation.score(address),
            "peer_reputation": reputation.scores(),
            "rewards_earned": self.context.counters.rewards_earned / COIN,
        }

    def block_summary(self, height: int) -> dict[str, Any] | None:
        block = self.ledger.chain.block_at(height)
        if block is None:
            return None
        header = block.header
        task = block_task(block)
        attestations = self.intake.block_attestations(block)
        return {
            "height": header.height,
            "hash": block.hash().hex(),
            "prev_hash": header.prev_hash.hex(),
            "timestamp_ms": header.timestamp_ms,
            "difficulty": header.difficulty,
            "nonce": header.nonce,
            "miner": address_of(header.miner) if header.miner else "",
            "task_id": "" if task is None else task.hex(),
            "transactions": [
                {"txid": tx.txid().hex(), "kind": tx.kind, "fee": tx.fee / COIN}
                for tx in block.transactions
            ],
            "checkpoint_bytes": len(block.checkpoint),
            "attestations": [
                {"verifier": a.verifier, "valid": a.valid, "reason": a.reason} for a in attestations
            ],
            "verified": verified(attestations),
        }

    def ticket(self, ticket_id: bytes, amount: float, role: NodeRole) -> TicketView:
        """A ticket this node bought: from the chain once mined, else from the mempool, else
        (dropped, or slashed since) what was asked for, unconfirmed."""
        address = self.context.address
        ticket = self.ledger.chain.state.tickets.get(ticket_id)
        if ticket is not None:
            return TicketView(
                ticket_id.hex(), ticket.role.value, ticket.amount / COIN, ticket.owner, True
            )
        tx = self.ledger.mempool.get(ticket_id)
        if tx is not None and isinstance(tx.payload, BuyTicket):
            bought = tx.payload
            return TicketView(
                ticket_id.hex(), bought.role.value, bought.amount / COIN, address, False
            )
        return TicketView(ticket_id.hex(), role.value, amount, address, False)

    # -- tasks ---------------------------------------------------------------------------------

    def task_views(self) -> list[TaskView]:
        bootstrap = bootstrap_task_id(self.context.params)
        tasks = self.ledger.chain.state.tasks
        views = [self._task_view(r) for task_id, r in tasks.items() if task_id != bootstrap]
        for task_id in self.context.tasks.pending:
            if task_id not in tasks:
                view = self._pending_view(task_id)
                if view is not None:
                    views.append(view)
        return sorted(views, key=_chain_order)

    def task_view(self, task_id: bytes) -> TaskView | None:
        record = self.ledger.chain.state.tasks.get(task_id)
        if record is None or task_id == bootstrap_task_id(self.context.params):
            return self._pending_view(task_id)
        return self._task_view(record)

    def tasks_training(self) -> int:
        """Open client tasks whose drawn miners are still training (pouw_tasks_training)."""
        bootstrap = bootstrap_task_id(self.context.params)
        return sum(
            1
            for task_id, record in self.ledger.chain.state.tasks.items()
            if task_id != bootstrap
            and record.status == "open"
            and self._task_view(record).phase == "training"
        )

    def task_model(self, task_id: bytes) -> bytes | None:
        record = self.ledger.chain.state.tasks.get(task_id)
        if record is None or record.result is None or not record.result.ranking:
            return None
        return self.context.tasks.model_bytes(task_id, record.result.ranking[0].model_hash)

    def _pending_view(self, task_id: bytes) -> TaskView | None:
        """A task this node paid for whose payment still waits in the mempool."""
        pending = self.context.tasks.pending.get(task_id)
        tx = self.ledger.mempool.get(task_id)
        if pending is None or tx is None or not isinstance(tx.payload, PayForTask):
            return None
        client, reward = pending
        spec = tx.payload.spec
        return TaskView(
            task_id=task_id.hex(),
            phase="pending",
            client=client,
            reward=reward,
            epochs=spec.epochs,
            dataset=spec.dataset.name,
            min_accuracy=spec.min_accuracy,
            created_height=None,
            message="payment not yet in a block",
        )

    def _task_view(self, record: TaskRecord) -> TaskView:
        tasks = self.context.tasks
        progress = tasks.of(record.task_id)
        is_open = record.status == "open"
        evaluating = is_open and progress.evaluating
        assignment = self.ledger.draw(record)
        if assignment is not None and assignment.miners and is_open:
            drawn = {t.owner for t in assignment.miners}
            evaluating = evaluating or drawn <= set(progress.final_models)
        return tasks.view(record, assignment, evaluating=evaluating)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _chain_order(view: TaskView) -> tuple[bool, int]:
    """Tasks on chain by height, then those still in the mempool."""
    return (view.created_height is None, view.created_height or 0)
