"""Amplification: a peer that asks for large items and never reads the answers makes a node
hold at most its outbound bound before it is dropped and banned, and a getdata repeated for
the same item is answered once."""

from __future__ import annotations

from pouw.network.messages import Data, GetData, ItemKind, Items, Ping, Pong
from tests.network.fakes import (
    Cluster,
    FakeNode,
    RawPeer,
    banned,
    dropped,
    item,
    run,
    tuned,
    until,
)

MIB = 1 << 20
BOUND = 4 * MIB


def _store(count: int, size: int) -> tuple[FakeNode, list[bytes]]:
    store = FakeNode()
    ids = []
    for number in range(count):
        item_id, payload = item(number.to_bytes(4, "big") * (size // 4))
        store.items[(ItemKind.TX, item_id)] = payload
        ids.append(item_id)
    return store, ids


def test_a_peer_that_never_reads_is_dropped_and_banned_before_its_queue_passes_the_bound() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            store, ids = _store(48, MIB)
            settings = tuned(max_queued_bytes=BOUND)
            victim, _, metrics = await cluster.node("victim", handler=store, settings=settings)
            attacker = RawPeer(victim, reads=False)
            try:
                await attacker.hello()
                await until(lambda: victim.peer_count() == 1)
                for start in range(0, len(ids), 8):
                    await attacker.send(GetData(ItemKind.TX, ids[start : start + 8]))
                await until(lambda: dropped(metrics, "slow_reader") == 1)
                assert banned(metrics) == 1 and victim.peer_count() == 0
                assert victim.queued_bytes() <= BOUND
            finally:
                attacker.close()

    run(scenario)


def test_a_getdata_repeated_for_a_large_item_is_answered_once() -> None:
    async def scenario() -> None:
        async with Cluster() as cluster:
            store, (large,) = _store(1, 4 * MIB)
            victim, _, metrics = await cluster.node("victim", handler=store)
            asker = RawPeer(victim)
            try:
                await asker.hello()
                await until(lambda: victim.peer_count() == 1)
                await asker.send(GetData(ItemKind.TX, [large] * 8))
                for _ in range(20):
                    await asker.send(GetData(ItemKind.TX, [large]))
                await asker.send(Ping(7, 0, bytes(32), 1))
                answers = []
                while not isinstance(answer := await asker.next_body(), Pong):
                    answers.append(answer)
                sent = [a for a in answers if isinstance(a, Data | Items)]
                assert [a.item_id for a in sent if isinstance(a, Data)] == [large]
                assert len(sent) == 1
                assert dropped(metrics, "repeated_getdata") == 21
                assert victim.peer_count() == 1  # not the peer's fault: not scored
            finally:
                asker.close()

    run(scenario)
