"""What a peer can make a node remember is bounded: iterations for a task that is not on chain
are relayed but leave no progress and no journal behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.items import iteration_message
from tests.support.nodes import local_node

from pouw.config import NodeConfig
from pouw.crypto import KeyPair, sha256
from pouw.network.messages import ItemKind, Verdict
from pouw.node.items import IterationBatch, IterationRecord, encode_item, sign_batch
from pouw.roles import NodeRole

CHAIN = NodeConfig().chain_id


def _batch(key: KeyPair, task_id: bytes) -> IterationBatch:
    message = iteration_message(task_id, key.public_key).encode()
    record = IterationRecord(message, b"", bytes(64))  # unchecked by the relay
    return sign_batch(key, CHAIN, IterationBatch(key.public_key, (record,)))


def test_iterations_for_a_task_not_on_chain_leave_nothing_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path, "supervisor", NodeRole.SUPERVISOR)
        await node.start()
        try:
            unknown = {sha256(b"no such task %d" % number) for number in range(20)}
            for task_id in unknown:
                batch = _batch(KeyPair.generate(), task_id)
                result = await node.intake.on_item(
                    ItemKind.ITERATION, batch.item_id(), encode_item(batch), "peer"
                )
                assert result.verdict == Verdict.ACCEPTED  # relayed: the relay may be behind
            assert unknown.isdisjoint(node.tasks.progress)
            assert not (tmp_path / "iterations").exists()
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
