"""The seed README's "Monitoring & Analytics": status, health and economics of a node.

Run: python examples/monitoring.py
"""

import asyncio
import tempfile
from pathlib import Path

from pouw.economics import NodeRole
from pouw.node import NodeConfig, PoUWNode


async def monitor(data_dir: Path) -> None:
    node = PoUWNode(
        "node",
        NodeRole.MINER,
        config=NodeConfig(node_id="node", role=NodeRole.MINER, port=0, data_dir=data_dir),
    )
    await node.start()
    node.stake_and_register(10.0)
    await node.start_mining()
    try:
        while node.get_status()["blockchain_height"] < 2:
            await asyncio.sleep(0.5)
        status = node.get_status()
        print(f"""
Node Status:
- ID: {status["node_id"]}
- Role: {status["role"]}
- Running: {status["is_running"]}
- Mining: {status["is_mining"]}
- Blockchain Height: {status["blockchain_height"]}
- Peer Count: {status["peer_count"]}
- Blocks Mined: {status["stats"]["blocks_mined"]}
- Rewards Earned: {status["stats"]["rewards_earned"]} PAI
""")
        health = node.get_health_metrics()
        print(f"""
Health Metrics:
- Response Time: {health.response_time}ms
- Success Rate: {health.success_rate:.2%}
- CPU Usage: {health.cpu_usage:.1f}%
- Memory Usage: {health.memory_usage:.1f}%
""")
        economic = node.get_economic_status()
        print(f"""
Economic Status:
- Staked: {economic["staked"]}
- Stake Amount: {economic.get("stake_amount", 0)} PAI
- Reputation: {economic["reputation"]:.2f}
- Total Rewards: {economic["rewards_earned"]} PAI
""")
    finally:
        await node.stop()


if __name__ == "__main__":
    asyncio.run(monitor(Path(tempfile.mkdtemp(prefix="pouw-example-"))))
