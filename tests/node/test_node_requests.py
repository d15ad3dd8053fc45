"""Idempotent writes of a real PoUWNode: a repeated request id pays for a task, or buys a
ticket, once, also across a restart (the ids are kept in the node's data dir); ids are scoped
by route, and an id reused with another body is a conflict."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.support.nodes import local_node

from pouw.node.node import PoUWNode
from pouw.node.requests import REQUESTS_FILE, RequestConflict
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


def on_node(tmp_path: Path, scenario: Callable[[PoUWNode], Awaitable[None]]) -> None:
    """Run `scenario` against a started node in `tmp_path`."""

    async def run() -> None:
        node = local_node(tmp_path)
        await node.start()
        try:
            await scenario(node)
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(run(), timeout=60))


def test_a_task_sent_with_a_stake_shaped_id_does_not_answer_a_later_stake(tmp_path: Path) -> None:
    """Before routes, a task paid with request id "stake:K" was what a stake with "K" found:
    the stake answered the task's id as its ticket and bought nothing."""

    async def scenario(node: PoUWNode) -> None:
        task_id = await node.submit_task_spec(SPEC, 3.0, 0.01, request_id="stake:K")
        ticket = node.stake(5.0, NodeRole.MINER, request_id="K")
        assert ticket.ticket_id != task_id
        assert len(node.mempool) == 2  # the payment and a ticket really bought

    on_node(tmp_path, scenario)


def test_a_request_id_reused_with_another_body_is_refused_naming_the_id(tmp_path: Path) -> None:
    async def scenario(node: PoUWNode) -> None:
        await node.submit_task_spec(SPEC, 3.0, 0.01, request_id="K")
        with pytest.raises(RequestConflict, match=r"'K'.*/tasks"):
            await node.submit_task_spec(SPEC, 4.0, 0.01, request_id="K")
        node.stake(5.0, NodeRole.MINER, request_id="K")
        with pytest.raises(RequestConflict, match=r"'K'.*/stake"):
            node.stake(6.0, NodeRole.MINER, request_id="K")
        with pytest.raises(RequestConflict):
            node.stake(5.0, NodeRole.VERIFIER, request_id="K")
        assert len(node.mempool) == 2, "nothing paid or bought for a conflict"

    on_node(tmp_path, scenario)


def test_ids_kept_before_routes_still_answer_their_retries(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / REQUESTS_FILE).write_text(json.dumps({"old": "ab" * 32, "stake:old": "cd" * 32}))

    async def scenario(node: PoUWNode) -> None:
        assert await node.submit_task_spec(SPEC, 3.0, 0.01, request_id="old") == "ab" * 32
        assert node.stake(5.0, NodeRole.MINER, request_id="old").ticket_id == "cd" * 32
        assert len(node.mempool) == 0

    on_node(tmp_path, scenario)
