"""ZeroMQ sockets: one ROUTER bound for inbound peers, one DEALER per outbound peer.

CurveZMQ is on by default. Its *server* keypair is derived from a network key that every
node of one network shares (a Kubernetes Secret; on a devnet, derived from the chain id),
and every client uses a fresh keypair: traffic is encrypted to the holders of the network
key, like a private network's pre-shared key, and peers authenticate each other at the
application layer with ed25519-signed envelopes.
"""

from __future__ import annotations

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

LINGER_MS = 0


def network_curve_keypair(secret: bytes) -> tuple[bytes, bytes]:
    """(public, secret) z85-encoded CURVE keys derived from a shared network secret."""
    private = X25519PrivateKey.from_private_bytes(sha256(b"pouw-curve-server" + secret))
    raw_secret = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return z85.encode(raw_public), z85.encode(raw_secret)


def default_network_key(chain_id: str) -> bytes:
    return sha256(b"pouw-network-key:" + chain_id.encode())


class Transport:
    def __init__(self, *, secure: bool, network_key: bytes, max_message_bytes: int) -> None:
        self.context = zmq.asyncio.Context()
        self.secure = secure
        self.server_public, self.server_secret = network_curve_keypair(network_key)
        self.max_message_bytes = max_message_bytes

    def _limits(self, socket: zmq.asyncio.Socket) -> None:
        socket.setsockopt(zmq.LINGER, LINGER_MS)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)

    def bind_router(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        router = self.context.socket(zmq.ROUTER)
        self._limits(router)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.secure:
            router.curve_server = True
            router.curve_publickey = self.server_public
            router.curve_secretkey = self.server_secret
        if port == 0:
            bound = router.bind_to_random_port(f"tcp://{host}")
        else:
            router.bind(f"tcp://{host}:{port}")
            bound = port
        return router, bound

    def connect_dealer(self, host: str, port: int) -> zmq.asyncio.Socket:
        dealer = self.context.socket(zmq.DEALER)
        self._limits(dealer)
        if self.secure:
            public, secret = zmq.curve_keypair()
            dealer.curve_serverkey = self.server_public
            dealer.curve_publickey = public
            dealer.curve_secretkey = secret
        dealer.connect(f"tcp://{host}:{port}")
        return dealer

    def close(self) -> None:
        self.context.destroy(linger=LINGER_MS)
