"""The handshake binds a peer to its link: each side signs the other's fresh challenge (for
that very receiver), so a hello replayed or relayed from another link takes over nothing."""

from __future__ import annotations

import time

import zmq
import zmq.asyncio

from pouw.crypto import KeyPair, SignedKind
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.messages import Hello, challenge_body, open_frame, seal
from pouw.network.network import Network
from pouw.network.transport import Transport, default_network_key, network_curve_keypair
from tests.network.fakes import CHAIN, FAST, HOST, Cluster, FakeNode, dropped, run, until

LIMIT = 1 << 20


class Trap:
    """A listener that records the frames dialled to it and answers a hello as a node would:
    how an attacker collects an honest node's genuine hellos."""

    def __init__(self) -> None:
        self.key = KeyPair.from_seed(b"trap")
        self.transport = Transport(
            secure=True, network_key=default_network_key(CHAIN), max_message_bytes=LIMIT
        )
        self.router, self.port = self.transport.bind_router(HOST, 0)

    async def next_hello(self, *, answering: bool = False) -> tuple[bytes, bytes, Hello]:
        """The routing id, the frame as it came and its hello (one with an answer)."""
        while True:
            routing_id, frame = await self.router.recv_multipart()
            _, body = open_frame(frame, CHAIN, LIMIT)
            if isinstance(body, Hello) and bool(body.answer) == answering:
                return routing_id, frame, body

    async def answer(self, routing_id: bytes, sender: bytes, theirs: Hello) -> None:
        info = FakeNode().chain_info()
        answer = self.key.sign_as(SignedKind.HELLO, CHAIN, challenge_body(theirs.challenge, sender))
        hello = Hello(
            CHAIN, info.genesis_hash, 0, info.tip_hash, 0, HOST, self.port, bytes(32), answer
        )
        await self.router.send_multipart([routing_id, seal(self.key, CHAIN, hello, now_ms())])

    def close(self) -> None:
        self.transport.close(linger_ms=0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def replayer(port: int) -> zmq.asyncio.Socket:
    """A DEALER that holds the network key (a member of the network, as any peer is)."""
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    public, secret = zmq.curve_keypair()
    socket.curve_serverkey = network_curve_keypair(default_network_key(CHAIN))[0]
    socket.curve_publickey, socket.curve_secretkey = public, secret
    socket.connect(f"tcp://{HOST}:{port}")
    return socket


def test_a_replayed_hello_takes_over_no_peer_connection() -> None:
    async def scenario() -> None:
        trap = Trap()
        async with Cluster() as cluster:
            victim, _, metrics = await cluster.node("victim")
            honest_key = KeyPair.from_seed(b"honest")
            honest = Network(
                honest_key,
                FakeNode(),
                host=HOST,
                port=0,
                bootstrap_peers=[(HOST, victim.port), (HOST, trap.port)],
                metrics=NodeMetrics(),
                settings=FAST,
            )
            await honest.start()
            cluster.networks.append(honest)
            attacker = replayer(victim.port)
            try:
                routing_id, first_hello, theirs = await trap.next_hello()
                await until(lambda: victim.peer_count() == 1)
                (link_before,) = victim._wire.links.peer_links().values()

                await attacker.send(first_hello)  # genuine, signed, fresh: as it was sent
                reply = await attacker.recv()  # the victim answers it with its own challenge
                assert isinstance(open_frame(reply, CHAIN, LIMIT)[1], Hello)
                assert victim._wire.links.peer_links() == {honest_key.public_key: link_before}

                await trap.answer(routing_id, honest_key.public_key, theirs)
                # the honest node's answer to the trap's challenge:
                _, answering_hello, _ = await trap.next_hello(answering=True)
                await attacker.send(answering_hello)  # replayed to the victim
                await until(lambda: dropped(metrics, "bad_handshake") == 1)
                assert victim._wire.links.peer_links() == {honest_key.public_key: link_before}
                assert not link_before.closed
                await until(lambda: honest.peer_count() == 2)  # the victim and the trap
            finally:
                attacker.close(linger=0)
                trap.close()

    run(scenario)


def test_an_answer_must_sign_this_link_s_challenge_for_this_node() -> None:
    """An answer made for another recipient is refused and scored (one made for another
    challenge: above); the right one admits the peer."""

    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, _, metrics = await cluster.node("victim")
            key = KeyPair.from_seed(b"dialler")
            socket = replayer(victim.port)
            info = FakeNode().chain_info()

            def hello(answer: bytes = b"") -> bytes:
                body = Hello(
                    CHAIN, info.genesis_hash, 0, info.tip_hash, 0, HOST, 1, bytes(32), answer
                )
                return seal(key, CHAIN, body, now_ms())

            try:
                await socket.send(hello())
                envelope, theirs = open_frame(await socket.recv(), CHAIN, LIMIT)
                assert isinstance(theirs, Hello)
                elsewhere = challenge_body(theirs.challenge, KeyPair.from_seed(b"x").public_key)
                await socket.send(hello(key.sign_as(SignedKind.HELLO, CHAIN, elsewhere)))
                await until(lambda: dropped(metrics, "bad_handshake") == 1)
                assert victim.peer_count() == 0
                right = challenge_body(theirs.challenge, envelope.sender)
                await socket.send(hello(key.sign_as(SignedKind.HELLO, CHAIN, right)))
                await until(lambda: victim.peer_count() == 1)
            finally:
                socket.close(linger=0)

    run(scenario)
