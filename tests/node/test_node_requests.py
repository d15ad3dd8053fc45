"""Idempotent writes of a real PoUWNode: a repeated request id pays for a task, or buys a
ticket, once, also across a restart (the ids are kept in the node's data dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.nodes import local_node

from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

SPEC = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), epochs=2)


def test_a_repeated_request_id_pays_and_buys_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path / "client")
        await node.start()
        try:
            ticket = node.stake(5.0, NodeRole.MINER, request_id="stake-1")
            assert node.stake(5.0, NodeRole.MINER, request_id="stake-1") == ticket
            task_id = await node.submit_task_spec(SPEC, 3.0, 0.01, request_id="stake-1")
            assert task_id != ticket.ticket_id  # task and stake request ids are apart
            assert await node.submit_task_spec(SPEC, 3.0, 0.01, request_id="stake-1") == task_id
            assert len(node.mempool) == 2
            other = node.stake(5.0, NodeRole.MINER, request_id="stake-2")
            assert other.ticket_id != ticket.ticket_id and len(node.mempool) == 3
        finally:
            await node.stop()
        restarted = local_node(tmp_path / "client")
        await restarted.start()
        try:
            again = restarted.stake(5.0, NodeRole.MINER, request_id="stake-1")
            assert (again.ticket_id, again.role, again.amount) == (ticket.ticket_id, "MINER", 5.0)
            assert not again.confirmed
            assert len(restarted.mempool) == 3, "the journal's three, nothing bought anew"
        finally:
            await restarted.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
