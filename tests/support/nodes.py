"""A real PoUWNode for in-process tests: its own data dir, any free port, not started."""

from __future__ import annotations

from pathlib import Path

from pouw.node import NodeConfig, PoUWNode
from pouw.roles import NodeRole


def local_node(data_dir: Path, node_id: str = "client", role: NodeRole = NodeRole.PEER) -> PoUWNode:
    config = NodeConfig(node_id=node_id, role=role, port=0, data_dir=data_dir)
    return PoUWNode(node_id, role, config=config)
