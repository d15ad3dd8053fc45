"""A real mining PoUWNode drawn for a task it cannot train: it leaves the task on chain with its
reason, so the task is refunded at once (it was the only drawn miner) and every node shows why;
the node keeps mining, and a restarted node does not pick the task again."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pouw.blockchain.settlement import TaskRecord
from pouw.node import NodeConfig, PoUWNode
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec, TaskSpecError

DEADLINE_S = 60.0


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def miner(data_dir: Path, datasets: Path) -> PoUWNode:
    config = NodeConfig(
        node_id="miner",
        role=NodeRole.MINER,
        port=0,
        data_dir=data_dir,
        dataset_dir=datasets,
        block_time_ms=300,
    )
    return PoUWNode("miner", NodeRole.MINER, config=config)


def lying_file(directory: Path) -> TaskSpec:
    """Declared 4 features, 3 classes (the static check passes); the file holds 5 features."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    np.savez(directory / "cells.npz", x=rng.normal(size=(60, 5)), y=np.repeat([0, 1, 2], 20))
    digest = hashlib.sha256((directory / "cells.npz").read_bytes()).hexdigest()
    dataset = DatasetSpec(
        name="cells.npz", format="npz", sha256=digest, rows=60, features=4, classes=3
    )
    return TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=dataset, epochs=2, miners=1)


def test_a_miner_drawn_for_a_task_it_cannot_train_says_why_and_keeps_mining(
    tmp_path: Path,
) -> None:
    spec = lying_file(tmp_path / "datasets")

    async def scenario() -> None:
        node = miner(tmp_path / "miner", tmp_path / "datasets")
        await node.start()
        try:
            with pytest.raises(TaskSpecError, match="has 4 features"):
                await node.submit_task_spec(
                    TaskSpec(model=ModelSpec(layers=(64, 10)), dataset=DatasetSpec(name="iris")),
                    reward=5.0,
                    fee=0.01,
                )  # the example never reaches a block
            node.stake_and_register(5.0, NodeRole.MINER)
            task_id = bytes.fromhex(await node.submit_task_spec(spec, reward=5.0, fee=0.01))
            await node.start_mining()

            def record() -> TaskRecord | None:
                return node.chain.state.tasks.get(task_id)

            await until(lambda: (r := record()) is not None and r.status == "refunded")
            refund = record()
            assert refund is not None and refund.closed_at < refund.deadline
            assert refund.payouts[0].recipient == node.address  # the client: its escrow back
            why = "dataset refused: dataset 'cells.npz' declares features=4 but the file has 5"
            (withdrawal,) = refund.withdrawals
            assert withdrawal.miner == node.address and withdrawal.reason.startswith(why)
            view = node.task_view(task_id)
            assert view is not None and view.phase == "refunded"
            assert "every drawn miner left the task" in view.message and why in view.message
            height = node.chain.height
            await until(lambda: node.chain.height >= height + 2)  # mining on, by other work
            assert node.is_mining and node.miner.job is not None
            assert node.miner.job.task_id != task_id
        finally:
            await node.stop()
        restarted = miner(tmp_path / "miner", tmp_path / "datasets")
        await restarted.start()
        try:
            view = restarted.task_view(task_id)
            assert view is not None and view.phase == "refunded"
            await restarted.start_mining()
            assert restarted.miner.job is not None and restarted.miner.job.task_id != task_id
        finally:
            await restarted.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=3 * DEADLINE_S))
