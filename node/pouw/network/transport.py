"""ZeroMQ sockets: one ROUTER bound for inbound peers, one DEALER per outbound peer.

Key distribution. CurveZMQ is on by default (`secure=True`; POUW_ENABLE_SECURITY=false runs
plaintext). The CURVE *server* keypair of every node's ROUTER is derived from a network key
that all nodes of one network share (a Kubernetes Secret; when none is given, derived from the
chain id), and every DEALER uses a fresh client keypair of its own. Traffic is therefore
encrypted and readable only by holders of the network key, like a private network's
pre-shared key; no ZAP handler runs, so any holder may connect. Who a peer *is* is settled at
the application layer: every envelope is signed with the sender's ed25519 node key, and a link
belongs to the key that said hello on it.

Sends never block: a frame that does not fit in a peer's queue (ZeroMQ's high-water mark) is
dropped and counted, so a slow or stuck peer cannot stall the node. Each frame's tracker tells
when ZeroMQ has written it out, so the wire counts the bytes a peer has not read yet.
ZMQ_MAXMSGSIZE is set a little above the envelope limit: frames just over the limit still
arrive and are counted and scored as "oversized", while anything far larger is cut off by
ZeroMQ before it is buffered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zmq
import zmq.asyncio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from zmq.utils import z85

from pouw.crypto import sha256

CLOSE_LINGER_MS = 50
"""How long stop() lets queued frames (the goodbyes) leave before the sockets close."""
HIGH_WATER_MARK = 4096
RECONNECT_MAX_MS = 5_000


def network_curve_keypair(secret: bytes) -> tuple[bytes, bytes]:
    """(public, secret) z85-encoded CURVE keys derived from 32 shared secret bytes."""
    if len(secret) < 32:
        raise ValueError("a network key needs at least 32 secret bytes")
    private = X25519PrivateKey.from_private_bytes(sha256(b"pouw-curve-server\x00" + secret))
    raw_secret = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return z85.encode(raw_public), z85.encode(raw_secret)


def default_network_key(chain_id: str) -> bytes:
    """The network key of a network that configured none: public, so it only keeps traffic
    of one chain apart from another's; set a secret one for privacy."""
    return sha256(b"pouw-network-key:" + chain_id.encode())


def socket_limit(max_message_bytes: int) -> int:
    return max_message_bytes + max(64 * 1024, max_message_bytes // 8)


def send_now(socket: zmq.asyncio.Socket, frames: list[bytes]) -> zmq.MessageTracker | None:
    """Queue `frames` on `socket` without waiting; None when the peer's queue is full, the
    peer is gone (ROUTER) or the socket is closed. The tracker of the last frame (the
    payload) tells when ZeroMQ has written it out (or discarded it)."""
    if socket.closed:
        return None
    payload = zmq.Frame(frames[-1], track=True)
    tracker: zmq.MessageTracker = payload.tracker
    try:
        future = asyncio.ensure_future(
            socket.send_multipart([*frames[:-1], payload], flags=zmq.DONTWAIT, copy=False)
        )
    except zmq.ZMQError:
        return None
    if future.done():
        failed = future.cancelled() or future.exception() is not None
        return None if failed else tracker
    future.add_done_callback(_consume)
    return tracker


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Transport:
    def __init__(self, *, secure: bool, network_key: bytes, max_message_bytes: int) -> None:
        self.context = zmq.asyncio.Context()
        self.secure = secure
        self.server_public, self.server_secret = network_curve_keypair(network_key)
        self.max_message_bytes = max_message_bytes

    def _configure(self, socket: zmq.asyncio.Socket, ipv6: bool) -> None:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, socket_limit(self.max_message_bytes))
        socket.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        socket.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        if ipv6:
            socket.setsockopt(zmq.IPV6, 1)

    def bind_router(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        """The inbound socket on host:port (0: any free port) and the port it got."""
        router = self.context.socket(zmq.ROUTER)
        self._configure(router, ipv6=":" in host)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer fails loudly
        if self.secure:
            router.curve_server = True
            router.curve_publickey = self.server_public
            router.curve_secretkey = self.server_secret
        if port == 0:
            bound = router.bind_to_random_port(f"tcp://{_bracket(host)}")
        else:
            router.bind(f"tcp://{_bracket(host)}:{port}")
            bound = port
        return router, bound

    def connect_dealer(self, host: str, port: int) -> zmq.asyncio.Socket:
        dealer = self.context.socket(zmq.DEALER)
        self._configure(dealer, ipv6=":" in host)
        if self.secure:
            public, secret = zmq.curve_keypair()
            dealer.curve_serverkey = self.server_public
            dealer.curve_publickey = public
            dealer.curve_secretkey = secret
        dealer.connect(f"tcp://{_bracket(host)}:{port}")
        return dealer

    def close_socket(self, socket: zmq.asyncio.Socket, linger_ms: int = 0) -> None:
        if not socket.closed:
            socket.close(linger=linger_ms)

    def close(self, linger_ms: int = CLOSE_LINGER_MS) -> None:
        self.context.destroy(linger=linger_ms)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def peer_ip(frame: zmq.Frame) -> str | None:
    """The IP address a ROUTER frame came from (to complete a peer's unspecified listen
    host), or None where ZeroMQ does not know it."""
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return None
    return address if isinstance(address, str) and address else None
