"""The fault-injecting partition (pouw.network.faults): off by default, cuts both ways at
once, heals at once, and is drivable from a file for multi-process networks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from pouw.blockchain.block import encode_block
from pouw.network.faults import PARTITION_FILE_ENV, Partition, cut_from, format_sides, parse_sides
from pouw.network.messages import ItemKind, Ping
from pouw.network.network import Network
from pouw.network.peers import WRITTEN, BanScore, Link, TokenBucket
from tests.network.fakes import (
    HOST,
    Cluster,
    FakeNode,
    RawPeer,
    dropped,
    item,
    make_chain,
    run,
    tuned,
    until,
)


def address(network: Network) -> tuple[str, int]:
    return (HOST, network.port)


def link_to(where: tuple[str, int] | None = None, listen: tuple[str, int] | None = None) -> Link:
    link = Link("out", lambda frame: WRITTEN, TokenBucket(1.0, 1.0), BanScore(0.1), address=where)
    link.listen = listen
    return link


# -- the Partition value ---------------------------------------------------------------------


def test_an_empty_partition_blocks_nothing_and_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PARTITION_FILE_ENV, raising=False)
    partition = Partition.from_environment()
    assert not partition and partition.path is None
    assert not partition.blocks(link_to(("127.0.0.1", 1)))
    assert not partition.reload(("127.0.0.1", 7000))


def test_a_partition_blocks_by_dialled_address_listen_address_and_learnt_key() -> None:
    partition = Partition([("127.0.0.1", 7000)])
    assert partition.blocks(link_to(("127.0.0.1", 7000)))
    assert partition.blocks(link_to(None, listen=("127.0.0.1", 7000)))
    assert not partition.blocks(link_to(("127.0.0.1", 7001)))
    partition.learn(b"k" * 32, ("127.0.0.1", 7001))  # not cut: not learnt
    partition.learn(b"K" * 32, ("127.0.0.1", 7000))
    assert partition.blocks_sender(b"K" * 32) and not partition.blocks_sender(b"k" * 32)
    stranger = link_to(None)
    stranger.peer_key = b"K" * 32
    assert partition.blocks(stranger)
    partition.cut([("127.0.0.1", 7002)])
    partition.heal([("127.0.0.1", 7000)])
    assert partition.blocked == {("127.0.0.1", 7002)}
    assert not partition.blocks_sender(b"K" * 32)  # healed addresses forget their keys
    partition.heal()
    assert not partition


def test_the_partition_file_has_one_line_per_side() -> None:
    text = "# the split\n127.0.0.1:7000 [::1]:7001  # side A\n\n node-3:7002\n"
    sides = [[("127.0.0.1", 7000), ("::1", 7001)], [("node-3", 7002)]]
    assert parse_sides(text) == sides
    assert parse_sides(format_sides(sides)) == sides
    assert cut_from(sides, ("127.0.0.1", 7000)) == {("node-3", 7002)}
    assert cut_from(sides, ("node-3", 7002)) == {("127.0.0.1", 7000), ("::1", 7001)}
    assert cut_from(sides, ("127.0.0.1", 7003)) == set()  # on no side: cut from nobody
    for bad in ("127.0.0.1", ":7000", "host:port", "host:", "[]:7000"):
        with pytest.raises(ValueError, match="line 1"):
            parse_sides(bad)


def test_a_partition_file_is_reread_when_it_changes_and_a_bad_one_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, me = tmp_path / "split", ("127.0.0.1", 7000)
    monkeypatch.setenv(PARTITION_FILE_ENV, str(path))
    partition = Partition.from_environment()
    assert partition.path == path
    assert not partition.reload(me) and not partition  # no file yet: nothing cut
    path.write_text("127.0.0.1:7000\n127.0.0.1:7001 127.0.0.1:7002\n")
    assert partition.reload(me) and partition.blocked == {("127.0.0.1", 7001), ("127.0.0.1", 7002)}
    assert not partition.reload(me)  # unchanged
    path.write_text("127.0.0.1:7000\nnot an address\n")
    assert not partition.reload(me) and len(partition.blocked) == 2
    path.unlink()
    assert partition.reload(me) and not partition


# -- a running network -----------------------------------------------------------------------


def test_a_cut_closes_links_at_once_and_nothing_passes_until_healed() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            chain = make_chain(5)
            a, sa, ma = await cluster.node("a", handler=FakeNode(chain))
            b, sb, mb = await cluster.node("b", [a], handler=FakeNode(chain))
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            a.cut([address(b)])
            b.cut([address(a)])
            assert a.peer_count() == 0 and b.peer_count() == 0
            for block in sa.mine(3, salt=1):  # each side mines its own branch
                await a.publish(ItemKind.BLOCK, block.hash(), encode_block(block))
            sb.mine(2, salt=2)
            item_id, payload = item(b"only on side a")
            await a.publish(ItemKind.TX, item_id, payload)
            await asyncio.sleep(1.0)  # five FAST heartbeats: no redial, no ping, no sync
            assert a.peer_count() == 0 and b.peer_count() == 0
            assert (sa.height, sb.height) == (8, 7)
            assert (ItemKind.TX, item_id) not in sb.items
            assert a.peers() == [] and b.peers() == []
            a.heal()
            b.heal()
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1, timeout=5)
            await until(lambda: sb.tip == sa.tip, timeout=5)  # b reorganises onto a's branch
            assert sb.height == 8
            for metrics in (ma, mb):
                assert dropped(metrics, "no_hello") == 0
                assert dropped(metrics, "unsolicited") == 0

    run(scenario)


def test_one_sided_cut_isolates_the_pair_without_scoring_anyone() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            quick = tuned(peer_timeout_s=1.0)
            a, _, ma = await cluster.node("a", settings=quick)
            b, _, mb = await cluster.node("b", [a], settings=quick)
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            a.cut([address(b)])
            assert a.peer_count() == 0
            await until(lambda: b.peer_count() == 0, timeout=5)  # b's link to a times out
            await until(lambda: dropped(ma, "partitioned") > 0, timeout=5)  # b redials: dropped
            assert a.peer_count() == 0
            for network in (a, b):
                assert all(peer.ban_score == 0 for peer in network.peers())
            a.heal()
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1, timeout=10)
            assert dropped(mb, "partitioned") == 0

    run(scenario)


def test_a_hello_from_a_cut_peer_on_a_fresh_link_is_dropped_and_so_is_what_follows() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            a, _, metrics = await cluster.node("a")
            a.cut([(HOST, 1)])  # RawPeer says it listens on HOST:1
            peer = RawPeer(a)
            try:
                await peer.hello()
                await until(lambda: dropped(metrics, "partitioned") == 1)
                await peer.send(Ping(1, 0, b"\0" * 32, 0))
                await until(lambda: dropped(metrics, "partitioned") == 2)
                assert dropped(metrics, "no_hello") == 0  # not taken for a peer that lost us
                assert a.peer_count() == 0
                assert await peer.socket.poll(300, zmq.POLLIN) == 0  # no hello, no goodbye
                a.heal()
                await peer.hello()
                await until(lambda: a.peer_count() == 1)
            finally:
                peer.close()

    run(scenario)


def test_a_partition_file_splits_and_heals_a_running_network(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            split = tmp_path / "split"  # one file for the whole network
            shared = tuned(partition_file=split)
            a, sa, _ = await cluster.node("a", settings=shared)
            b, sb, _ = await cluster.node("b", [a], settings=shared)
            c, sc, _ = await cluster.node("c", [a, b], settings=shared)
            await until(lambda: [n.peer_count() for n in (a, b, c)] == [2, 2, 2])
            split.write_text(format_sides([[address(a)], [address(b)]]))  # c on neither side
            await until(lambda: [n.peer_count() for n in (a, b, c)] == [1, 1, 2])
            await asyncio.sleep(0.6)  # a few heartbeats: a and b stay apart, c talks to both
            assert [n.peer_count() for n in (a, b, c)] == [1, 1, 2]
            item_id, payload = item(b"through c")
            await a.publish(ItemKind.TX, item_id, payload)
            await until(lambda: (ItemKind.TX, item_id) in sb.items)  # the long way round
            split.write_text("")
            await until(lambda: [n.peer_count() for n in (a, b, c)] == [2, 2, 2])
            assert sa.items.keys() == set() and (ItemKind.TX, item_id) in sc.items

    run(scenario)
