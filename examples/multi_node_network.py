"""The seed README's "Multi-Node Network Setup": a supervisor and three miners in one process.

Run: python examples/multi_node_network.py
"""

import asyncio
import tempfile
from pathlib import Path

from pouw.economics import NodeRole
from pouw.node import NodeConfig, PoUWNode


async def setup_network(root: Path) -> None:
    supervisor = PoUWNode(
        "supervisor",
        NodeRole.SUPERVISOR,
        config=NodeConfig(
            node_id="supervisor", role=NodeRole.SUPERVISOR, port=0, data_dir=root / "supervisor"
        ),
    )
    await supervisor.start()
    supervisor.stake_and_register(1000.0)
    assert supervisor.network is not None
    miners = []
    for i in range(3):
        config = NodeConfig(
            node_id=f"miner_{i}",
            role=NodeRole.MINER,
            port=0,
            bootstrap_peers=[("127.0.0.1", supervisor.network.port)],
            data_dir=root / f"miner_{i}",
        )
        miner = PoUWNode(f"miner_{i}", NodeRole.MINER, config=config)
        await miner.start()
        miner.stake_and_register(100.0)
        await miner.start_mining()
        miners.append(miner)
    print("Network started with 1 supervisor + 3 miners")
    nodes = [supervisor, *miners]
    try:
        # every stake confirmed, and every node on the same tip
        while not all(n.get_economic_status()["staked"] for n in nodes) or (
            len({n.get_status()["tip"] for n in nodes}) != 1
        ):
            await asyncio.sleep(0.5)
        for node in nodes:
            status = node.get_status()
            print(
                f"{status['node_id']}: height {status['blockchain_height']}, "
                f"peers {status['peer_count']}, mined {status['stats']['blocks_mined']}"
            )
    finally:
        for node in reversed(nodes):
            await node.stop()


if __name__ == "__main__":
    asyncio.run(setup_network(Path(tempfile.mkdtemp(prefix="pouw-example-"))))
