"""Chain sync: a late node, a node on a fork, a node that missed blocks."""

from __future__ import annotations

import asyncio

from pouw.blockchain.block import encode_block
from pouw.network.messages import ItemKind
from tests.network.fakes import (
    Cluster,
    FakeNode,
    extend,
    make_chain,
    received,
    run,
    tuned,
    until,
)


def test_a_late_node_syncs_a_long_chain_in_batches() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            chain = make_chain(1234)
            source, _, _ = await cluster.node("source", handler=FakeNode(chain))
            late = FakeNode()
            _, _, metrics = await cluster.node("late", [source], handler=late)
            await until(lambda: late.height == 1234)
            assert late.main == [block.hash() for block in chain]
            # 32 (the source does not know its block sizes yet), 500, 500, 202, then an
            # empty reply: nothing more
            assert late.sync_batches == 4
            await until(lambda: received(metrics, "blocks") == 5)

    run(scenario)


def test_sync_replies_fit_in_a_message() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            settings = tuned(max_message_bytes=256 * 1024)
            chain = make_chain(120, padding=30_000)  # 3.6 MB in blocks of ~30 KB
            source, _, _ = await cluster.node("source", handler=FakeNode(chain), settings=settings)
            late = FakeNode()
            await cluster.node("late", [source], handler=late, settings=settings)
            await until(lambda: late.height == 120)
            assert late.sync_batches >= 120 * 30_000 // (256 * 1024)

    run(scenario)


def test_a_node_on_a_lighter_fork_reorganises_onto_the_heavier_chain() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            trunk = make_chain(10)
            heavy = extend(trunk, 1490, salt=1)
            light = extend(trunk, 690, salt=2)  # longer than a batch: the first batch of the
            # heavy branch moves nothing, and the next must start after it, not again
            source, _, _ = await cluster.node("source", handler=FakeNode(heavy))
            forked = FakeNode(light)
            _, _, metrics = await cluster.node("forked", [source], handler=forked)
            await until(lambda: forked.height == 1500)
            assert forked.main == [block.hash() for block in heavy]
            assert received(metrics, "blocks") <= 5

    run(scenario)


def test_an_orphan_block_makes_the_node_fetch_what_it_missed() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            slow = tuned(heartbeat_s=30.0)  # no ping carries the news: only the orphan does
            chain = make_chain(50)
            a_chain, b_chain = FakeNode(chain), FakeNode(chain)
            a, _, _ = await cluster.node("a", handler=a_chain, settings=slow)
            await cluster.node("b", [a], handler=b_chain, settings=slow)
            await until(lambda: a.peer_count() == 1)
            missed = a_chain.mine(5)
            tip = missed[-1]
            await a.publish(ItemKind.BLOCK, tip.hash(), encode_block(tip))
            await until(lambda: b_chain.height == 55)
            assert b_chain.tip == tip.hash()

    run(scenario)


def test_pings_carry_the_tip_so_a_node_notices_it_fell_behind() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            chain = make_chain(20)
            a_chain, b_chain = FakeNode(chain), FakeNode(chain)
            a, _, _ = await cluster.node("a", handler=a_chain)
            await cluster.node("b", [a], handler=b_chain)
            await until(lambda: a.peer_count() == 1)
            a_chain.mine(30)  # no announcement at all
            await until(lambda: b_chain.height == 50)

    run(scenario)


def test_sync_fetches_from_the_best_peer_and_returns_once_caught_up() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            slow = tuned(heartbeat_s=30.0)  # b only learns of a's new blocks by asking
            a_chain, b_chain = FakeNode(make_chain(5)), FakeNode(make_chain(5))
            a, _, _ = await cluster.node("a", handler=a_chain, settings=slow)
            b, _, _ = await cluster.node("b", [a], handler=b_chain, settings=slow)
            await until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            await asyncio.wait_for(b.sync(), 5)  # nothing to fetch: one round trip
            assert b_chain.height == 5
            a_chain.mine(1200)
            await asyncio.wait_for(b.sync(), 10)
            assert b_chain.height == 1205

    run(scenario)
