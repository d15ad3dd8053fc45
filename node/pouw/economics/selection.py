"""Which tickets work on a task: recomputable by anyone from the chain.

A ticket's lottery score for a task is H(seed || task id || ticket id), where the seed is the
hash of the block that confirmed the task; the lowest scores of a role win. Only tickets
confirmed at or before that block take part, so a ticket bought after seeing the seed cannot
steer the draw.
"""

from __future__ import annotations

from dataclasses import dataclass

from pouw.blockchain.state import LedgerState, TaskRecord, Ticket
from pouw.crypto import sha256
from pouw.roles import NodeRole

MAX_HELPERS_PER_ROLE = 8
"""Supervisors, verifiers and evaluators drawn per task."""


def ticket_score(seed: bytes, task_id: bytes, ticket_id: bytes) -> bytes:
    return sha256(seed + task_id + ticket_id)


def draw(
    tickets: list[Ticket], role: NodeRole, count: int, seed: bytes, task_id: bytes, height: int
) -> list[Ticket]:
    eligible = [t for t in tickets if t.role == role and t.height <= height]
    eligible.sort(key=lambda t: ticket_score(seed, task_id, t.ticket_id))
    chosen: list[Ticket] = []
    owners: set[str] = set()
    for ticket in eligible:  # one seat per owner: a node's second ticket adds no second worker
        if ticket.owner not in owners:
            chosen.append(ticket)
            owners.add(ticket.owner)
        if len(chosen) == count:
            break
    return chosen


@dataclass(frozen=True)
class TaskAssignment:
    miners: list[Ticket]
    supervisors: list[Ticket]
    verifiers: list[Ticket]
    evaluators: list[Ticket]

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
        }.get(role, [])
        return any(t.owner == address for t in seats)


def assign(state: LedgerState, task: TaskRecord, seed: bytes) -> TaskAssignment:
    tickets = state.live_tickets()

    def pick(role: NodeRole, count: int) -> list[Ticket]:
        return draw(tickets, role, count, seed, task.task_id, task.height)

    return TaskAssignment(
        miners=pick(NodeRole.MINER, task.spec.miners),
        supervisors=pick(NodeRole.SUPERVISOR, MAX_HELPERS_PER_ROLE),
        verifiers=pick(NodeRole.VERIFIER, MAX_HELPERS_PER_ROLE),
        evaluators=pick(NodeRole.EVALUATOR, 1),
    )
