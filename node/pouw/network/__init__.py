"""Peer-to-peer networking: signed msgpack envelopes over ZeroMQ (CurveZMQ), announce-then-fetch
gossip, chain sync, peer exchange and ban scores.

Modules: messages (envelope and bodies), transport (sockets, CURVE keys), peers and links
(bookkeeping), relay (inv/getdata state), core, peering, sync and gossip (the `Network`).
"""

from pouw.network.gossip import Network, NetworkHandler, NetworkSettings, PeerInfo
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
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
