"""The node: PoUWNode composes chain, miner, network and roles (seed API paths kept)."""

from pouw.config import NodeConfig
from pouw.node.node import NodeNotRunning, PoUWNode

__all__ = ["NodeConfig", "NodeNotRunning", "PoUWNode"]
