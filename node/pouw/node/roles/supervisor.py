"""The supervisor role: keep every IT_RES of each task on chain, in an append-only journal per
task (length-prefixed records) in the data dir, within a byte budget per miner and task and in
total (pouw.budgets): a record past it is not journaled, and counted."""

from __future__ import annotations

from pathlib import Path

from pouw.blockchain.iteration_message import IterationMessage
from pouw.budgets import (
    ITERATION_JOURNAL_BYTES_PER_SENDER,
    ITERATION_JOURNAL_BYTES_TOTAL,
    ByteBudget,
)
from pouw.crypto import address_of
from pouw.node.context import NodeContext
from pouw.node.items import IterationRecord, encode_item

JOURNAL_DIR = "iterations"
BEFORE_RESTART = ""
"""Who the journals on disk at start are charged to, per task (their bytes count in the
total; the miners' shares start again)."""

Share = tuple[str, str]
"""(task id hex, miner address): a miner's share is per task."""


class SupervisorRole:
    def __init__(
        self, context: NodeContext, budget: ByteBudget[Share, Share] | None = None
    ) -> None:
        self.context = context
        self.journals = context.config.data_dir / JOURNAL_DIR
        self.budget = budget or ByteBudget(
            ITERATION_JOURNAL_BYTES_PER_SENDER, ITERATION_JOURNAL_BYTES_TOTAL
        )
        """Journal bytes by (task, miner)."""
        for journal in self.journals.glob("*.log"):
            restored = (journal.stem, BEFORE_RESTART)
            self.budget.add(restored, restored, journal.stat().st_size)
        context.events.peer_iteration.subscribe(self._journal)

    def journal_of(self, task_id: bytes) -> Path:
        return self.journals / f"{task_id.hex()}.log"

    def _journal(self, message: IterationMessage, record: IterationRecord) -> None:
        payload = encode_item(record)
        entry = len(payload).to_bytes(4, "big") + payload
        share = (message.task_id.hex(), address_of(message.miner))
        refused = self.budget.refusal(share, len(entry))
        if refused is not None:
            self.context.metrics.over_budget.labels("iteration_journal", refused).inc()
            return
        path = self.journal_of(message.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as journal:
            journal.write(entry)
        self.budget.add(share, share, len(entry))
