"""Peer-to-peer networking: signed msgpack envelopes over ZeroMQ (CurveZMQ), announce-then-fetch
gossip, chain sync, peer exchange and ban scores.

Modules, top down: network (the `Network`, composing the parts); peering, gossip (items) and
sync (the parts); imports (the import queue) and wire (sockets, links, checks on every
frame); links, relay (inv/getdata state), faults (partitions) and transport (sockets, CURVE
keys); peers (bookkeeping); messages (envelope and bodies); drops (drop reasons) and settings.
"""

from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.network.network import Network, NetworkHandler
from pouw.network.peers import PeerInfo
from pouw.network.settings import NetworkSettings
from pouw.network.transport import network_curve_keypair

__all__ = [
    "ChainInfo",
    "ItemKind",
    "ItemResult",
    "Network",
    "NetworkHandler",
    "NetworkSettings",
    "PeerInfo",
    "Verdict",
    "network_curve_keypair",
]
