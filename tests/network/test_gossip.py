"""Gossip between real Network instances on 127.0.0.1 (CurveZMQ on unless a test says not)."""

from __future__ import annotations

import asyncio

import pytest

from pouw.crypto import sha256
from pouw.network.messages import ItemKind
from tests.network.fakes import (
    Cluster,
    RawPeer,
    crash,
    dropped,
    item,
    received,
    run,
    tuned,
    until,
)


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plaintext"])
def test_an_item_travels_down_a_line_of_four_nodes_once_each(secure: bool) -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, sa, _ = await cluster.node("a", secure=secure, max_peers=1)
            b, sb, _ = await cluster.node("b", [a], secure=secure, max_peers=2)
            c, sc, _ = await cluster.node("c", [b], secure=secure, max_peers=2)
            d, sd, _ = await cluster.node("d", [c], secure=secure, max_peers=1)
            await until(lambda: [n.peer_count() for n in (a, b, c, d)] == [1, 2, 2, 1])
            item_id, payload = item(b"x" * 30_000)
            sa.items[(ItemKind.BLOCK, item_id)] = payload
            await a.publish(ItemKind.TX, item_id, payload)
            await until(lambda: all((ItemKind.TX, item_id) in s.items for s in (sb, sc, sd)))
            assert sd.items[(ItemKind.TX, item_id)] == payload
            await asyncio.sleep(0.3)  # a few heartbeats: nothing comes back around
            assert [s.received[item_id] for s in (sa, sb, sc, sd)] == [0, 1, 1, 1]

    run(scenario)


def test_a_mesh_delivers_each_item_to_each_node_once() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            nodes = [await cluster.node("n0")]
            for number in range(1, 6):
                nodes.append(await cluster.node(f"n{number}", [nodes[0][0], nodes[-1][0]]))
            await until(lambda: all(n.peer_count() >= 2 for n, _, _ in nodes))
            origin: dict[bytes, int] = {}
            for number in range(24):
                item_id, payload = item(b"tx %d" % number)
                origin[item_id] = number % 6
                await nodes[number % 6][0].publish(ItemKind.TX, item_id, payload)

            def everyone_has_everything() -> bool:
                return all(
                    handler.received[item_id] >= 1
                    for index, (_, handler, _) in enumerate(nodes)
                    for item_id, source in origin.items()
                    if source != index
                )

            await until(everyone_has_everything)
            await asyncio.sleep(0.3)
            for index, (_, handler, _) in enumerate(nodes):
                counts = {handler.received[i] for i, source in origin.items() if source != index}
                assert counts == {1}
                assert all(handler.received[i] == 0 for i, s in origin.items() if s == index)

    run(scenario)


def test_a_relay_asks_for_no_more_than_it_can_import_and_loses_nothing() -> None:
    """B's import queue holds 16 items; A announces 600 at once. B fetches what fits, defers
    the rest and fetches them as imports finish: C gets all, and B drops none as overloaded."""

    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, _ = await cluster.node("a", max_peers=1)
            b, _, metrics_b = await cluster.node(
                "b", [a], max_peers=2, settings=tuned(import_queue=16, rate_per_s=10_000.0)
            )
            _, sc, _ = await cluster.node("c", [b], max_peers=1)
            await until(lambda: b.peer_count() == 2)
            ids = []
            for number in range(600):
                item_id, payload = item(b"%d" % number * 40)
                ids.append(item_id)
                await a.publish(ItemKind.TX, item_id, payload)
            await until(lambda: all(sc.received[i] == 1 for i in ids), timeout=20)
            assert dropped(metrics_b, "overloaded") == 0

    run(scenario)


def test_small_items_asked_together_come_back_in_one_frame() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, _ = await cluster.node("a")
            _, sb, metrics_b = await cluster.node("b", [a])
            await until(lambda: a.peer_count() == 1)
            ids = []
            for number in range(50):  # no await in between that yields: one inv, one getdata
                item_id, payload = item(b"small %d" % number)
                ids.append(item_id)
                await a.publish(ItemKind.TX, item_id, payload)
            big_id, big = item(bytes(300_000))
            await a.publish(ItemKind.TX, big_id, big)
            await until(lambda: len(sb.items) == 51)
            assert received(metrics_b, "inv") == 1 and received(metrics_b, "items") == 1
            assert received(metrics_b, "data") == 1  # the large one alone

    run(scenario)


def test_an_accepted_item_is_relayed_a_rejected_one_is_not_and_costs_its_sender() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, _ = await cluster.node("a", max_peers=1)
            b, sb, metrics_b = await cluster.node("b", [a], max_peers=2)
            _, sc, _ = await cluster.node("c", [b], max_peers=1)
            await until(lambda: b.peer_count() == 2)
            bad_id, bad = item(b"bad: forged work")
            await a.publish(ItemKind.TX, bad_id, bad)
            await until(lambda: dropped(metrics_b, "bad_item") == 1)
            (from_a,) = [p for p in b.peers() if p.node_key == a.key.public_key.hex()]
            assert 20 <= from_a.ban_score <= 25 and b.peer_count() == 2  # not banned for one
            good_id, good = item(b"good")
            await a.publish(ItemKind.TX, good_id, good)
            await until(lambda: (ItemKind.TX, good_id) in sc.items)
            assert sc.received[bad_id] == 0 and sb.received[bad_id] == 1

    run(scenario)


def test_peer_exchange_introduces_nodes_that_only_know_the_bootstrap() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            hub, _, _ = await cluster.node("hub")
            spokes = [await cluster.node(f"spoke-{n}", [hub]) for n in range(4)]
            await until(lambda: all(s.peer_count() == 4 for s, _, _ in spokes))
            addresses = {p.address for p in spokes[0][0].peers()}
            assert f"127.0.0.1:{spokes[3][0].port}" in addresses

    run(scenario)


def test_max_peers_is_respected_and_refused_nodes_find_each_other() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            hub, _, _ = await cluster.node("hub", max_peers=2)
            spokes = [await cluster.node(f"spoke-{n}", [hub], max_peers=1) for n in range(4)]
            # The hub takes two; it tells the others where its peers are, and the two it
            # refused end up peering with each other.
            await until(lambda: all(s.peer_count() == 1 for s, _, _ in spokes))
            await asyncio.sleep(0.5)  # give refused dials the chance to (wrongly) succeed
            assert hub.peer_count() == 2
            assert all(s.peer_count() <= 1 for s, _, _ in spokes)

    run(scenario)


def test_a_peer_that_stops_says_goodbye_and_is_redialled_when_back() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            b, _, _ = await cluster.node("b")
            port = b.port
            a, _, metrics_a = await cluster.node("a", [b], settings=tuned(peer_timeout_s=30.0))
            await until(lambda: a.peer_count() == 1)
            await b.stop()
            await until(lambda: a.peer_count() == 0, timeout=2.0)  # the goodbye, no timeout
            assert received(metrics_a, "bye") == 1
            b2, sb2, _ = await cluster.node("b", port=port)
            await until(lambda: a.peer_count() == 1 and b2.peer_count() == 1)
            item_id, payload = item(b"after the restart")
            await a.publish(ItemKind.TX, item_id, payload)
            await until(lambda: (ItemKind.TX, item_id) in sb2.items)

    run(scenario)


def test_a_peer_that_crashed_and_came_back_on_its_port_is_greeted_again() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            patient = tuned(peer_timeout_s=30.0)  # not the timeout: the "hello_first" path
            b, _, _ = await cluster.node("b", settings=patient)
            a, sa, _ = await cluster.node("a", [b], settings=patient)
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            await crash(b)
            cluster.networks.remove(b)
            b2, _, _ = await cluster.node("b", settings=patient, port=b.port)
            await until(lambda: b2.peer_count() == 1, timeout=5.0)
            item_id, payload = item(b"from the new b")
            await b2.publish(ItemKind.TX, item_id, payload)
            await until(lambda: (ItemKind.TX, item_id) in sa.items)

    run(scenario)


def test_an_unspecified_listen_host_is_advertised_as_the_address_seen() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            hub, _, _ = await cluster.node("hub")
            wild, _, _ = await cluster.node("wild", [hub], host="0.0.0.0")
            late, _, _ = await cluster.node("late", [hub])
            await until(lambda: late.peer_count() == 2)
            assert f"127.0.0.1:{wild.port}" in {p.address for p in late.peers()}

    run(scenario)


def test_a_silent_peer_is_dropped_after_the_timeout() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, _ = await cluster.node("a", settings=tuned(peer_timeout_s=1.0))
            silent = RawPeer(a)
            try:
                await silent.hello()
                await until(lambda: a.peer_count() == 1)
                await until(lambda: a.peer_count() == 0, timeout=5.0)
            finally:
                silent.close()

    run(scenario)


def test_only_holders_of_the_network_key_can_join() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            secret, other = sha256(b"our network"), sha256(b"another network")
            a, _, _ = await cluster.node("a", network_key=secret)
            outsider, _, _ = await cluster.node("outsider", [a], network_key=other)
            insider, _, _ = await cluster.node("insider", [a], network_key=secret)
            await until(lambda: insider.peer_count() == 1 and a.peer_count() == 1)
            # The outsider dialled first; its CURVE handshake with a's server key cannot succeed.
            assert outsider.peer_count() == 0

    run(scenario)
