"""A node's mempool survives a restart and a kill: what was admitted and not yet mined is
journaled, replayed through admission on start, and compacted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.nodes import local_node

from pouw.node.ledger import MEMPOOL_JOURNAL
from pouw.node.mempool_journal import MempoolJournal
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

SPEC = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), epochs=2)


def test_replay_gives_the_records_in_order_and_leaves_out_a_torn_one(tmp_path: Path) -> None:
    journal = MempoolJournal(tmp_path / "journal", compact_after=3)
    assert list(journal.replay()) == []
    for record in (b"first", b"", b"third"):
        journal.append(record)
    assert journal.full
    journal.close()
    with (tmp_path / "journal").open("ab") as file:
        file.write((100).to_bytes(4, "big") + b"killed mid-write")
    assert list(journal.replay()) == [b"first", b"", b"third"]
    journal.rewrite([b"kept"])
    assert list(journal.replay()) == [b"kept"] and not journal.full
    assert not (tmp_path / "journal.tmp").exists()


def test_a_paid_task_and_a_ticket_wait_in_the_mempool_across_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path)
        await node.start()
        try:
            ticket = node.stake(5.0, NodeRole.MINER)
            task_id = await node.submit_task_spec(SPEC, 3.0, 0.01)
        finally:
            await node.stop()
        with (tmp_path / MEMPOOL_JOURNAL).open("ab") as file:
            file.write((3).to_bytes(4, "big") + b"bad")  # a record no decoder takes
        restarted = local_node(tmp_path)
        await restarted.start()
        try:
            assert len(restarted.mempool) == 2
            view = restarted.task_view(bytes.fromhex(task_id))
            assert view is not None and view.phase == "pending" and view.reward == 3.0
            assert bytes.fromhex(ticket.ticket_id) in restarted.mempool
            assert len(list(MempoolJournal(tmp_path / MEMPOOL_JOURNAL, 1).replay())) == 2
        finally:
            await restarted.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
