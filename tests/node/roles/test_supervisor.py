"""The supervisor's IT_RES journal holds at most its byte budget, per miner and in total, also
across a restart: a flood of records from throwaway miners cannot fill the disk, and what was
journaled first stays."""

from __future__ import annotations

from pathlib import Path

from tests.node.fakes import context, message_of, record

from pouw.budgets import ByteBudget
from pouw.crypto import KeyPair, sha256
from pouw.node.context import NodeContext
from pouw.node.roles.supervisor import SupervisorRole
from pouw.roles import NodeRole

TASK_ID = sha256(b"a task")
KIB = 1024


def _send(node: NodeContext, miner: KeyPair, iterations: int, size: int) -> None:
    for iteration in range(iterations):
        message = message_of(miner, TASK_ID, iteration=iteration)
        node.events.peer_iteration.emit(message, record(message, bytes(size)))


def _over_budget(node: NodeContext, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "pouw_over_budget_total", {"store": "iteration_journal", "reason": reason}
    )
    return value or 0.0


def test_records_from_throwaway_miners_stay_within_the_journal_budget(tmp_path: Path) -> None:
    node = context(tmp_path, role=NodeRole.SUPERVISOR)
    supervisor = SupervisorRole(node, ByteBudget(per_sender=256 * KIB, total=1024 * KIB))
    honest = KeyPair.generate()
    _send(node, honest, iterations=3, size=64 * KIB)
    journaled = supervisor.journal_of(TASK_ID).stat().st_size
    for _ in range(40):
        _send(node, KeyPair.generate(), iterations=8, size=64 * KIB)  # 512 KiB each
    assert supervisor.journal_of(TASK_ID).stat().st_size <= 1024 * KIB
    assert supervisor.budget.of((TASK_ID.hex(), honest.address)) == journaled
    assert _over_budget(node, "over_sender_budget") > 0
    assert _over_budget(node, "store_full") > 0

    again = context(tmp_path, role=NodeRole.SUPERVISOR)
    restarted = SupervisorRole(again, ByteBudget(per_sender=256 * KIB, total=1024 * KIB))
    assert restarted.budget.used == supervisor.journal_of(TASK_ID).stat().st_size
    before = restarted.budget.used
    _send(again, KeyPair.generate(), iterations=8, size=64 * KIB)
    assert restarted.journal_of(TASK_ID).stat().st_size == before
