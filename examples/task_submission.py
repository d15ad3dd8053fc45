"""The seed README's "Task Submission": a client pays for a task with an MLTask.

A miner runs beside the client so that the payment is mined into a block.
Run: python examples/task_submission.py
"""

import asyncio
import tempfile
from pathlib import Path

from pouw.blockchain import MLTask
from pouw.economics import NodeRole
from pouw.node import NodeConfig, PoUWNode


async def submit_training_task(root: Path) -> None:
    miner = PoUWNode(
        "miner",
        NodeRole.MINER,
        config=NodeConfig(node_id="miner", role=NodeRole.MINER, port=0, data_dir=root / "miner"),
    )
    await miner.start()
    await miner.start_mining()
    assert miner.network is not None
    client = PoUWNode(
        "client",
        NodeRole.PEER,
        config=NodeConfig(
            node_id="client",
            port=0,
            bootstrap_peers=[("127.0.0.1", miner.network.port)],
            data_dir=root / "client",
        ),
    )
    await client.start()
    try:
        task = MLTask(
            task_id="image_classification_001",
            task_type="image_classification",
            dataset_hash="digits",  # a built-in dataset; the seed's "0x123abc..." names none
            model_requirements={"architecture": "CNN", "min_accuracy": 0.90, "max_epochs": 100},
            reward_amount=50.0,
        )
        success = await client.submit_task(task, fee=5.0)
        print(f"Task submitted: {success}")
        deadline = asyncio.get_running_loop().time() + 60
        while client.task_views()[0].created_height is None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the payment was not mined within 60 s")
            await asyncio.sleep(0.5)
        view = client.task_views()[0]
        print(f"Task {view.task_id[:16]} is on chain at height {view.created_height}")
        # No miner has staked a ticket here, so the task waits for one to be drawn.
        print(f"Phase: {view.phase} ({view.message})")
    finally:
        await client.stop()
        await miner.stop()


if __name__ == "__main__":
    asyncio.run(submit_training_task(Path(tempfile.mkdtemp(prefix="pouw-example-"))))
