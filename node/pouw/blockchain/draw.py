"""Who works on a task: drawn by the ledger itself, the same on every node of a branch.

A task confirmed in block h is drawn when block h + `draw_delay` is applied. A ticket's lottery
score is H(seed || task id || ticket id) with seed = H("pouw-draw" || task id || hash of block
h + draw_delay); the lowest scores of a role win, one seat per owner. Only tickets confirmed at
or below h take part, so none can be bought after the seed is known, and the seed comes from a
block its producer mined after the task and the tickets were fixed. The result is written into
the task's record (and reverted with it), so a later slash or restart never reseats anyone.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from pouw.crypto import sha256
from pouw.roles import NodeRole

MAX_HELPERS_PER_ROLE = 8
"""Supervisors and verifiers drawn per task."""
EVALUATORS_PER_TASK = 3
"""Evaluators drawn per task: a majority of those drawn settles it (pouw.blockchain.settlement)."""


class Ticket(msgspec.Struct, frozen=True, array_like=True):
    """A stake bought for a role (BUY_TICKET), as the ledger keeps it and as a draw seats it."""

    ticket_id: bytes
    owner: str
    public_key: bytes
    role: NodeRole
    amount: int
    height: int
    preferences: dict[str, str] = {}


class TaskDraw(msgspec.Struct, frozen=True, array_like=True):
    seed: bytes
    height: int
    """The block whose hash seeded the draw."""
    miners: tuple[Ticket, ...]
    """In worker order: the i-th trains shard i."""
    supervisors: tuple[Ticket, ...]
    verifiers: tuple[Ticket, ...]
    evaluators: tuple[Ticket, ...]


def draw_seed(task_id: bytes, block_hash: bytes) -> bytes:
    return sha256(b"pouw-draw" + task_id + block_hash)


def ticket_score(seed: bytes, task_id: bytes, ticket_id: bytes) -> bytes:
    return sha256(seed + task_id + ticket_id)


def draw(
    tickets: Iterable[Ticket],
    role: NodeRole,
    count: int,
    seed: bytes,
    task_id: bytes,
    height: int,
) -> list[Ticket]:
    """The `count` lowest-scored tickets of `role` confirmed at or below `height`."""
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


def draw_task(
    tickets: list[Ticket],
    task_id: bytes,
    miners: int,
    confirmed_at: int,
    block_hash: bytes,
    height: int,
) -> TaskDraw:
    seed = draw_seed(task_id, block_hash)

    def pick(role: NodeRole, count: int) -> tuple[Ticket, ...]:
        return tuple(draw(tickets, role, count, seed, task_id, confirmed_at))

    return TaskDraw(
        seed=seed,
        height=height,
        miners=pick(NodeRole.MINER, miners),
        supervisors=pick(NodeRole.SUPERVISOR, MAX_HELPERS_PER_ROLE),
        verifiers=pick(NodeRole.VERIFIER, MAX_HELPERS_PER_ROLE),
        evaluators=pick(NodeRole.EVALUATOR, EVALUATORS_PER_TASK),
    )
