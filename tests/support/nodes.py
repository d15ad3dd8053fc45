"""A real PoUWNode for in-process tests: its own data dir, any free port, not started."""

from __future__ import annotations

from pathlib import Path

from pouw.bench.network import ItemStore
from pouw.crypto import KeyPair
from pouw.network.network import Network
from pouw.node import NodeConfig, PoUWNode
from pouw.roles import NodeRole


def local_node(data_dir: Path, node_id: str = "client", role: NodeRole = NodeRole.PEER) -> PoUWNode:
    config = NodeConfig(node_id=node_id, role=role, port=0, data_dir=data_dir)
    return PoUWNode(node_id, role, config=config)


def hostile_peer(node: PoUWNode, key: KeyPair) -> Network:
    """A bare network endpoint (not started) that dials `node` with `key`: what a peer that
    speaks the wire format but runs no node of its own can send."""
    assert node.network is not None, "start the node first"
    return Network(
        key,
        ItemStore(node.intake.chain_info()),
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", node.network.port)],
    )
