"""Real Network instances on 127.0.0.1 (ZeroMQ, CurveZMQ on unless a test says otherwise)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

from pouw.bench.network import ItemStore
from pouw.crypto import KeyPair, canonical_bytes, sha256
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.gossip import Network, NetworkSettings
from pouw.network.messages import (
    ChainInfo,
    DropMessage,
    Envelope,
    ItemKind,
    Ping,
    open_frame,
    seal,
)
from pouw.network.transport import default_network_key, network_curve_keypair

CHAIN = "pouw-test"
GENESIS = sha256(b"genesis")
LIMIT = 1 << 20


def info(chain_id: str = CHAIN, genesis: bytes = GENESIS) -> ChainInfo:
    return ChainInfo(chain_id, genesis, 0, genesis, 0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def node(
    name: str,
    peers: list[Network] | None = None,
    chain_id: str = CHAIN,
    genesis: bytes = GENESIS,
    **options: Any,
) -> tuple[Network, ItemStore, NodeMetrics]:
    store, metrics = ItemStore(info(chain_id, genesis)), NodeMetrics()
    network = Network(
        KeyPair.from_seed(name.encode()),
        store,
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", p.port) for p in peers or []],
        metrics=metrics,
        **options,
    )
    await network.start()
    return network, store, metrics


def dropped(metrics: NodeMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("pouw_messages_dropped_total", {"reason": reason})
    return value or 0.0


# -- envelopes -----------------------------------------------------------------------------------


def test_an_envelope_round_trips_and_refuses_tampering() -> None:
    key = KeyPair.from_seed(b"a")
    frame = seal(key, CHAIN, Ping(7), 1)
    envelope, body = open_frame(frame, CHAIN, LIMIT)
    assert body == Ping(7) and envelope.sender == key.public_key
    decoded = msgspec.msgpack.decode(frame, type=Envelope)
    forged = canonical_bytes(msgspec.structs.replace(decoded, body=canonical_bytes(Ping(8))))
    cases = [
        (forged, "bad_signature"),
        (frame, "bad_signature", "other-chain"),
        (b"\x93garbage", "malformed"),
        (os.urandom(LIMIT + 1), "oversized"),
    ]
    for case in cases:
        data, reason = case[0], case[1]
        chain = case[2] if len(case) > 2 else CHAIN
        with pytest.raises(DropMessage) as caught:
            open_frame(data, str(chain), LIMIT)
        assert caught.value.reason == reason


def test_an_unknown_type_is_refused_even_when_signed() -> None:
    key = KeyPair.from_seed(b"a")
    unsigned = Envelope(1, "launch_missiles", key.public_key, 1, b"")
    signed = msgspec.structs.replace(unsigned, signature=key.sign(unsigned.signing_digest(CHAIN)))
    with pytest.raises(DropMessage) as caught:
        open_frame(canonical_bytes(signed), CHAIN, LIMIT)
    assert caught.value.reason == "unknown_type"


# -- gossip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [True, False])
def test_an_item_travels_down_a_line_of_four_nodes(secure: bool) -> None:
    async def scenario() -> None:
        a, sa, _ = await node("a", secure=secure, max_peers=2)
        b, sb, _ = await node("b", [a], secure=secure, max_peers=2)
        c, sc, _ = await node("c", [b], secure=secure, max_peers=2)
        d, sd, _ = await node("d", [c], secure=secure, max_peers=2)
        try:
            await until(lambda: d.peer_count() >= 1 and a.peer_count() >= 1)
            payload = os.urandom(30_000)
            item_id = sha256(payload)
            sa.items[item_id] = payload
            await a.publish(ItemKind.BLOCK, item_id, payload)
            await until(lambda: all(item_id in s.items for s in (sb, sc, sd)))
            assert sd.items[item_id] == payload
        finally:
            for network in (d, c, b, a):
                await network.stop()

    run(scenario)


def test_peer_exchange_introduces_nodes_that_only_know_the_bootstrap() -> None:
    async def scenario() -> None:
        hub, _, _ = await node("hub")
        spokes = [await node(f"spoke-{i}", [hub]) for i in range(3)]
        try:
            await until(lambda: all(s[0].peer_count() == 3 for s in spokes), timeout=20)
        finally:
            for network, _, _ in spokes:
                await network.stop()
            await hub.stop()

    run(scenario)


def test_max_peers_is_respected() -> None:
    async def scenario() -> None:
        hub, _, _ = await node("hub", max_peers=2)
        spokes = [await node(f"spoke-{i}", [hub], max_peers=1) for i in range(4)]
        try:
            await until(lambda: hub.peer_count() == 2)
            await asyncio.sleep(0.5)  # give refused dials the chance to (wrongly) succeed
            assert hub.peer_count() == 2
        finally:
            for network, _, _ in spokes:
                await network.stop()
            await hub.stop()

    run(scenario)


def test_a_peer_on_another_chain_is_disconnected() -> None:
    async def scenario() -> None:
        # Same chain id, another genesis (another chain id would already fail the
        # signature domain, and under CURVE the network key).
        a, _, metrics = await node("a")
        b, _, _ = await node("b", [a], genesis=sha256(b"another genesis"))
        try:
            await until(lambda: dropped(metrics, "wrong_chain") >= 1)
            assert a.peer_count() == 0 and b.peer_count() == 0
        finally:
            await b.stop()
            await a.stop()

    run(scenario)


# -- garbage from a raw socket ---------------------------------------------------------------------


async def raw_dealer(network: Network) -> zmq.asyncio.Socket:
    context = zmq.asyncio.Context.instance()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    public, secret = zmq.curve_keypair()
    dealer.curve_serverkey = network_curve_keypair(default_network_key(CHAIN))[0]
    dealer.curve_publickey, dealer.curve_secretkey = public, secret
    dealer.connect(f"tcp://127.0.0.1:{network.port}")
    return dealer


def test_garbage_is_dropped_counted_and_ends_in_a_ban_while_gossip_goes_on() -> None:
    async def scenario() -> None:
        victim, store, metrics = await node("victim")
        friend, friend_store, _ = await node("friend", [victim])
        attacker = await raw_dealer(victim)
        try:
            await until(lambda: victim.peer_count() == 1)
            mallory = KeyPair.from_seed(b"mallory")
            hello_free = seal(mallory, CHAIN, Ping(1), 1)  # valid, but no hello first
            unsigned = Envelope(1, "nope", mallory.public_key, 1, b"")
            unknown = canonical_bytes(
                msgspec.structs.replace(
                    unsigned, signature=mallory.sign(unsigned.signing_digest(CHAIN))
                )
            )
            for frame in (b"\x00\x01garbage", unknown, hello_free, b"\xc1" * 100):
                await attacker.send(frame)
            for _ in range(10):
                await attacker.send(b"more garbage")
            await until(lambda: dropped(metrics, "malformed") >= 3)
            assert dropped(metrics, "unknown_type") >= 1
            banned = "pouw_peers_banned_total"
            await until(lambda: (metrics.registry.get_sample_value(banned) or 0) >= 1)
            payload = b"still working"
            item_id = sha256(payload)
            friend_store.items[item_id] = payload
            await friend.publish(ItemKind.TX, item_id, payload)
            await until(lambda: item_id in store.items)
        finally:
            attacker.close(linger=0)
            await friend.stop()
            await victim.stop()

    run(scenario)


def test_a_flood_is_rate_limited() -> None:
    async def scenario() -> None:
        settings = NetworkSettings(rate_per_s=20, burst=20, ban_threshold=10_000)
        victim, _, metrics = await node("victim", settings=settings)
        attacker = await raw_dealer(victim)
        try:
            key = KeyPair.from_seed(b"flooder")
            for number in range(300):
                await attacker.send(seal(key, CHAIN, Ping(number), number))
            await until(lambda: dropped(metrics, "rate_limited") >= 100)
        finally:
            attacker.close(linger=0)
            await victim.stop()

    run(scenario)


def test_a_plaintext_client_cannot_talk_to_a_curve_node() -> None:
    async def scenario() -> None:
        victim, _, metrics = await node("victim")
        context = zmq.asyncio.Context.instance()
        plain = context.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(f"tcp://127.0.0.1:{victim.port}")
        try:
            for _ in range(5):
                await plain.send(b"hello?")
            await asyncio.sleep(0.5)
            seen = [
                sample
                for family in metrics.registry.collect()
                if family.name in ("pouw_messages_received", "pouw_messages_dropped")
                for sample in family.samples
            ]
            assert seen == [] and victim.peer_count() == 0
        finally:
            plain.close(linger=0)
            await victim.stop()

    run(scenario)
