"""Which tickets work on a task, as the ledger drew them (`pouw.blockchain.draw`)."""

from __future__ import annotations

from dataclasses import dataclass

from pouw.blockchain.draw import (
    MAX_HELPERS_PER_ROLE,
    TaskDraw,
    Ticket,
    draw,
    draw_seed,
    ticket_score,
)
from pouw.blockchain.settlement import TaskRecord
from pouw.roles import NodeRole

__all__ = [
    "MAX_HELPERS_PER_ROLE",
    "Ticket",
    "TaskAssignment",
    "assignment_of",
    "draw",
    "draw_seed",
    "ticket_score",
]


@dataclass(frozen=True)
class TaskAssignment:
    miners: tuple[Ticket, ...]
    supervisors: tuple[Ticket, ...]
    verifiers: tuple[Ticket, ...]
    evaluators: tuple[Ticket, ...]

    @classmethod
    def of(cls, drawn: TaskDraw) -> TaskAssignment:
        return cls(drawn.miners, drawn.supervisors, drawn.verifiers, drawn.evaluators)

    def worker_index(self, address: str) -> int | None:
        for index, ticket in enumerate(self.miners):
            if ticket.owner == address:
                return index
        return None

    def holds(self, role: NodeRole, address: str) -> bool:
        seats = {
            NodeRole.MINER: self.miners,
            NodeRole.SUPERVISOR: self.supervisors,
            NodeRole.VERIFIER: self.verifiers,
            NodeRole.EVALUATOR: self.evaluators,
        }.get(role, ())
        return any(t.owner == address for t in seats)


def assignment_of(record: TaskRecord) -> TaskAssignment | None:
    """The task's workers; None until the ledger has drawn them."""
    return None if record.drawn is None else TaskAssignment.of(record.drawn)
