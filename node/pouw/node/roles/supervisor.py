"""The supervisor role: keep every IT_RES of each task on chain, in an append-only journal per
task (length-prefixed records) in the data dir."""

from __future__ import annotations

from pathlib import Path

from pouw.blockchain.iteration_message import IterationMessage
from pouw.node.context import NodeContext
from pouw.node.items import IterationRecord, encode_item

JOURNAL_DIR = "iterations"


class SupervisorRole:
    def __init__(self, context: NodeContext) -> None:
        self.journals = context.config.data_dir / JOURNAL_DIR
        context.events.peer_iteration.subscribe(self._journal)

    def journal_of(self, task_id: bytes) -> Path:
        return self.journals / f"{task_id.hex()}.log"

    def _journal(self, message: IterationMessage, record: IterationRecord) -> None:
        payload = encode_item(record)
        path = self.journal_of(message.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as journal:
            journal.write(len(payload).to_bytes(4, "big") + payload)
