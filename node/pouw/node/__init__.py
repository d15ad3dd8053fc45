"""The node: PoUWNode composes ledger, intake, network and roles (seed API paths kept)."""

from pouw.config import NodeConfig
from pouw.node.ledger import NodeNotRunning
from pouw.node.node import PoUWNode

__all__ = ["NodeConfig", "NodeNotRunning", "PoUWNode"]
