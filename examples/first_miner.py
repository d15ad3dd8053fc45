"""The seed README's "Your First PoUW Node": a miner that stakes and mines by training.

Run: python examples/first_miner.py   (stops after a few blocks instead of looping forever)
"""

import asyncio
import os
import tempfile
from pathlib import Path

from pouw.economics import NodeRole
from pouw.node import NodeConfig, PoUWNode

BLOCKS = int(os.environ.get("EXAMPLE_BLOCKS", "3"))


async def start_miner(data_dir: Path) -> None:
    config = NodeConfig(
        node_id="my_miner",
        role=NodeRole.MINER,
        host="127.0.0.1",
        port=0,  # any free port; the seed used 8001
        initial_stake=100.0,
        data_dir=data_dir,
    )
    node = PoUWNode("my_miner", NodeRole.MINER, config=config)
    await node.start()
    ticket = node.stake_and_register(100.0)
    await node.start_mining()
    print(f"Miner started! Ticket ID: {ticket.ticket_id}")
    try:
        while node.get_status()["stats"]["blocks_mined"] < BLOCKS:
            await asyncio.sleep(0.5)
        status = node.get_status()
        print(f"Blocks mined: {status['stats']['blocks_mined']}")
        print(f"Staked: {node.get_economic_status()['staked']}")
    finally:
        await node.stop()


if __name__ == "__main__":
    asyncio.run(start_miner(Path(tempfile.mkdtemp(prefix="pouw-example-"))))
