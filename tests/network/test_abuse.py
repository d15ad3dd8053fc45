"""Garbage, impostors, floods and foreign chains: dropped, counted, scored, banned, and the
node keeps gossiping with its honest peers."""

from __future__ import annotations

import asyncio
import os

import msgspec
import zmq
import zmq.asyncio

from pouw.crypto import canonical_bytes
from pouw.network.messages import Data, Envelope, Inv, ItemKind, Items, Ping, seal, sign_envelope
from tests.network.fakes import (
    CHAIN,
    GENESIS,
    HOST,
    Cluster,
    FakeNode,
    RawPeer,
    banned,
    dropped,
    item,
    make_block,
    received,
    run,
    tuned,
    until,
)

PING = Ping(1, 0, bytes(32), 1)


def test_garbage_is_dropped_counted_and_ends_in_a_ban_while_gossip_goes_on() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, store, metrics = await cluster.node("victim")
            friend, _, _ = await cluster.node("friend", [victim])
            attacker = RawPeer(victim)
            try:
                await until(lambda: victim.peer_count() == 1)
                unknown = Envelope(1, "nope", attacker.key.public_key, 1, b"")
                signed = sign_envelope(attacker.key, CHAIN, unknown)
                await attacker.send_raw(canonical_bytes(signed))
                await attacker.send(PING)  # valid, but before any hello
                await attacker.send_raw(b"\x00\x01garbage")
                await until(lambda: dropped(metrics, "no_hello") == 1)
                assert dropped(metrics, "unknown_type") == 1
                assert dropped(metrics, "malformed") == 1
                assert banned(metrics) == 0
                for _ in range(10):
                    await attacker.send_raw(os.urandom(200))
                await until(lambda: banned(metrics) == 1)
                assert dropped(metrics, "malformed") >= 5
                # The ban holds: whatever else comes on that connection is not even decoded.
                await attacker.send(PING)
                await until(lambda: dropped(metrics, "banned") >= 1)
                assert victim.peer_count() == 1
                item_id, payload = item(b"still working")
                await friend.publish(ItemKind.TX, item_id, payload)
                await until(lambda: (ItemKind.TX, item_id) in store.items)
            finally:
                attacker.close()

    run(scenario)


def test_a_peer_sending_bad_signatures_is_banned_and_refused_when_it_returns() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, _, metrics = await cluster.node("victim")
            attacker = RawPeer(victim)
            try:
                await attacker.hello()
                await until(lambda: victim.peer_count() == 1)
                frame = msgspec.msgpack.decode(seal(attacker.key, CHAIN, PING, 1), type=Envelope)
                forged = canonical_bytes(msgspec.structs.replace(frame, signature=bytes(64)))
                await attacker.send_raw(forged)
                await until(lambda: dropped(metrics, "bad_signature") == 1)
                assert victim.peers()[0].ban_score >= 49 and banned(metrics) == 0
                for _ in range(2):  # scores fade a little with time: two more, not one
                    await attacker.send_raw(forged)
                await until(lambda: banned(metrics) == 1 and victim.peer_count() == 0)
            finally:
                attacker.close()
            again = RawPeer(victim)  # same key, new connection
            try:
                await again.hello()
                await until(lambda: dropped(metrics, "banned") >= 1)
                await asyncio.sleep(0.2)
                assert victim.peer_count() == 0
            finally:
                again.close()

    run(scenario)


def test_an_oversized_frame_is_dropped_and_scored() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            limit = 64 * 1024
            victim, _, metrics = await cluster.node(
                "victim", settings=tuned(max_message_bytes=limit)
            )
            attacker = RawPeer(victim)
            try:
                await attacker.hello()
                await until(lambda: victim.peer_count() == 1)
                await attacker.send(Data(ItemKind.TX, bytes(32), bytes(limit)))
                await until(lambda: dropped(metrics, "oversized") == 1)
                assert victim.peers()[0].ban_score >= 49
            finally:
                attacker.close()

    run(scenario)


def test_unsolicited_data_and_stale_timestamps_are_dropped() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, store, metrics = await cluster.node("victim")
            attacker = RawPeer(victim)
            try:
                await attacker.hello()
                await until(lambda: victim.peer_count() == 1)
                item_id, payload = item(b"pushed without an inv")
                await attacker.send(Data(ItemKind.TX, item_id, payload))
                await attacker.send(Items(ItemKind.TX, [item(b"one"), item(b"two")]))
                await attacker.send(PING, timestamp_ms=1)
                await until(lambda: dropped(metrics, "unsolicited") == 2)
                await until(lambda: dropped(metrics, "stale") == 1)
                assert store.items == {}
            finally:
                attacker.close()

    run(scenario)


def test_a_flood_is_rate_limited() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            settings = tuned(rate_per_s=20, burst=20, ban_threshold=10_000)
            victim, _, metrics = await cluster.node("victim", settings=settings)
            attacker = RawPeer(victim)
            try:
                await attacker.hello()
                for _ in range(300):
                    await attacker.send(Inv(ItemKind.TX, [os.urandom(32)]))
                await until(lambda: dropped(metrics, "rate_limited") >= 250)
                assert received(metrics, "inv") <= 40
            finally:
                attacker.close()

    run(scenario)


def test_a_flood_ends_in_a_ban_under_default_thresholds() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, _, metrics = await cluster.node(
                "victim", settings=tuned(rate_per_s=50, burst=50)
            )
            attacker = RawPeer(victim)
            try:
                await attacker.hello()
                for _ in range(200):
                    await attacker.send_raw(b"x")
                await until(lambda: banned(metrics) == 1)
            finally:
                attacker.close()

    run(scenario)


def test_a_peer_on_another_chain_is_disconnected_both_ways() -> None:
    async def scenario() -> None:
        # Same chain id, another genesis: another chain id would already fail the signature
        # domain (and, under CURVE, the network key).
        async with Cluster() as cluster:
            a, _, metrics_a = await cluster.node("a")
            other = FakeNode(genesis=make_block(None, salt=1))
            b, _, metrics_b = await cluster.node("b", [a], handler=other)
            await until(lambda: dropped(metrics_a, "wrong_chain") >= 1)
            await until(lambda: received(metrics_b, "bye") >= 1)
            await asyncio.sleep(0.3)
            assert a.peer_count() == 0 and b.peer_count() == 0
            assert other.genesis != GENESIS

    run(scenario)


def test_a_handler_that_raises_does_not_stop_the_node() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, _ = await cluster.node("a")
            b, sb, metrics_b = await cluster.node("b", [a])
            await until(lambda: a.peer_count() == 1)
            boom_id, boom = item(b"boom")
            await a.publish(ItemKind.TX, boom_id, boom)
            await until(lambda: dropped(metrics_b, "handler_error") == 1)
            item_id, payload = item(b"fine")
            await a.publish(ItemKind.TX, item_id, payload)
            await until(lambda: (ItemKind.TX, item_id) in sb.items)
            assert b.peer_count() == 1

    run(scenario)


def test_a_plaintext_client_cannot_talk_to_a_curve_node() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            victim, _, metrics = await cluster.node("victim")
            plain = RawPeer(victim, secure=False)
            wrong_key = zmq.asyncio.Context.instance().socket(zmq.DEALER)
            wrong_key.setsockopt(zmq.LINGER, 0)
            public, secret = zmq.curve_keypair()
            wrong_key.curve_serverkey, wrong_key.curve_publickey = zmq.curve_keypair()[0], public
            wrong_key.curve_secretkey = secret
            wrong_key.connect(f"tcp://{HOST}:{victim.port}")
            try:
                await plain.hello()
                await wrong_key.send(seal(plain.key, CHAIN, PING, 1))
                await asyncio.sleep(0.5)
                families = {"pouw_messages_received", "pouw_messages_dropped"}
                seen = [
                    sample
                    for family in metrics.registry.collect()
                    if family.name in families
                    for sample in family.samples
                ]
                assert seen == [] and victim.peer_count() == 0
            finally:
                plain.close()
                wrong_key.close(linger=0)

    run(scenario)
