"""The network's parts alone, without sockets: links that record what is sent on them, a wire
that is never started, fake handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pouw.budgets import ByteBudget
from pouw.crypto import KeyPair
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.drops import DropReason
from pouw.network.faults import Partition
from pouw.network.gossip import ItemGossip
from pouw.network.imports import Imported, ImportQueue
from pouw.network.messages import (
    ENVELOPE_OVERHEAD,
    Blocks,
    Body,
    ChainInfo,
    Data,
    DropMessage,
    GetBlocks,
    GetData,
    Inv,
    ItemKind,
    ItemResult,
    Ping,
    Pong,
    open_frame,
)
from pouw.network.peering import Peering
from pouw.network.peers import WRITTEN, BanScore, Link, Sender, Sent, TokenBucket
from pouw.network.settings import NetworkSettings
from pouw.network.sync import FIRST_SERVE_BLOCKS, Sync
from pouw.network.wire import Wire
from tests.network.fakes import CHAIN, FakeNode, dropped, item

LIMIT = 64 * 1024
SETTINGS = NetworkSettings(
    max_message_bytes=LIMIT,
    sync_batch=500,
    import_queue=2,
    max_queued_bytes=4 * LIMIT,
    max_queued_bytes_total=6 * LIMIT,
)


class Recorded:
    """A link's far end: the bodies sent on the link, decoded."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> Sent:
        self.frames.append(frame)
        return WRITTEN

    def bodies(self) -> list[Body]:
        return [open_frame(frame, CHAIN, LIMIT)[1] for frame in self.frames]


def peer_link(name: str, sent: Sender | None = None, work: int = 1) -> Link:
    link = Link("in", sent or Recorded(), TokenBucket(100.0, 100.0), BanScore(0.0))
    link.peer_key = KeyPair.from_seed(name.encode()).public_key
    link.routing_id = name.encode()
    link.chain = ChainInfo(CHAIN, bytes(32), work - 1, bytes(32), work)
    return link


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics()


@pytest.fixture
def wire(metrics: NodeMetrics) -> Iterator[Wire]:
    def refuse(link: Link, sender: bytes, body: Imported) -> None:
        raise AssertionError("nothing arrives on a wire that never started")

    wire = Wire(
        KeyPair.from_seed(b"us"),
        CHAIN,
        refuse,
        host="127.0.0.1",
        port=0,
        secure=False,
        network_key=bytes(32),
        max_peers=8,
        partition=Partition(),
        settings=SETTINGS,
        metrics=metrics,
    )
    yield wire
    wire.close(linger_ms=0)


def connect(wire: Wire, link: Link) -> Link:
    assert link.routing_id is not None
    wire.links.inbound[link.routing_id] = link
    return link


class Scores:
    """What an import queue reports: links penalised, and drops counted."""

    def __init__(self) -> None:
        self.penalised: list[tuple[Link, str]] = []
        self.counted: list[DropReason] = []

    def queue(self) -> ImportQueue:
        return ImportQueue(
            2,
            penalise=lambda link, reason: self.penalised.append((link, reason)),
            count_drop=self.counted.append,
        )


# -- the import queue ------------------------------------------------------------------------


class Recorder:
    """An importer that records what the queue did with its jobs (by the name of the link's
    peer); `outcome` says what judging a job from that peer raises."""

    def __init__(self, outcome: dict[str, BaseException | None] | None = None) -> None:
        self.outcome = outcome or {}
        self.events: list[str] = []

    async def judge(self, link: Link, body: Imported) -> None:
        self.events.append(f"judged {_name(link)}")
        error = self.outcome.get(_name(link))
        if error is not None:
            raise error

    def refused(self, link: Link, body: Imported) -> None:
        self.events.append(f"refused {_name(link)}")

    def failed(self, link: Link, body: Imported) -> None:
        self.events.append(f"failed {_name(link)}")


def _name(link: Link) -> str:
    return (link.routing_id or b"").decode()


def test_a_full_import_queue_refuses_the_job_and_counts_it_overloaded() -> None:
    scores = Scores()
    queue = scores.queue()
    importer = Recorder()
    for name in ("first", "second", "third"):
        queue.put(peer_link(name), Blocks([]), importer)
    assert importer.events == ["refused third"] and queue.room() == 0
    assert scores.counted == [DropReason.OVERLOADED] and scores.penalised == []


def test_the_import_worker_scores_refusals_survives_bugs_and_calls_back_after_each() -> None:
    scores = Scores()
    queue = scores.queue()
    honest, liar = peer_link("honest"), peer_link("liar")
    importer = Recorder(
        {
            "liar": DropMessage("loss_mismatch"),  # the node's reason, used as it is
            "honest": RuntimeError("a bug in the node"),
        }
    )
    queue.after_each(lambda: importer.events.append("done"))

    async def scenario() -> None:
        worker = asyncio.ensure_future(queue.run())
        queue.put(liar, Data(ItemKind.TX, bytes(32), b""), importer)
        queue.put(honest, Blocks([]), importer)
        while len(importer.events) < 5:
            await asyncio.sleep(0)
        worker.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 5))
    assert importer.events == [
        "judged liar", "done", "judged honest", "failed honest", "done",
    ]  # fmt: skip
    assert scores.penalised == [(liar, "loss_mismatch")]
    assert scores.counted == [DropReason.HANDLER_ERROR]


def test_the_import_queue_holds_at_most_its_bytes_per_link_and_in_total() -> None:
    """A peer answering our getdata with large items cannot fill the queue with its bytes:
    past its share its items are refused as overloaded (fetched again later), and another
    peer's still fit; a judged job gives its bytes back."""
    scores = Scores()
    queue = ImportQueue(
        100,
        penalise=lambda link, reason: scores.penalised.append((link, reason)),
        count_drop=scores.counted.append,
        budget=ByteBudget(per_sender=3000, total=4000),
    )
    importer = Recorder()
    flooder, other = peer_link("flooder"), peer_link("other")
    for _ in range(5):
        queue.put(flooder, Data(ItemKind.TX, bytes(32), bytes(1000)), importer)
    queue.put(other, Data(ItemKind.TX, bytes(32), bytes(1000)), importer)
    queue.put(other, Blocks([bytes(500), bytes(600)]), importer)
    assert importer.events == ["refused flooder", "refused flooder", "refused other"]
    assert queue.budget.of(flooder) == 3000 and queue.budget.used == 4000
    assert scores.counted == [DropReason.OVERLOADED] * 3 and scores.penalised == []

    async def scenario() -> None:
        worker = asyncio.ensure_future(queue.run())
        while queue.waiting():
            await asyncio.sleep(0)
        worker.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 5))
    assert queue.budget.used == 0


# -- what is queued to peers ------------------------------------------------------------------


class Unread:
    """A peer that reads nothing: every frame sent to it stays queued."""

    done = False

    def __call__(self, frame: bytes) -> Sent:
        return self


def _flood(wire: Wire, link: Link, frames: int) -> None:
    for number in range(frames):
        wire.send(link, Data(ItemKind.TX, number.to_bytes(32, "big"), bytes(LIMIT // 4)))


def test_a_peer_past_its_unread_bytes_is_dropped_and_banned(
    wire: Wire, metrics: NodeMetrics
) -> None:
    silent = connect(wire, peer_link("silent", Unread()))
    _flood(wire, silent, 40)
    assert silent.closed and wire.links.bans.banned(silent.peer_key)
    assert wire.queued_bytes(silent) <= SETTINGS.max_queued_bytes
    assert wire.queued_bytes() <= SETTINGS.max_queued_bytes  # the closed link's, still held
    assert (
        metrics.registry.get_sample_value("pouw_messages_dropped_total", {"reason": "slow_reader"})
        == 1
    )


def test_all_peers_together_hold_at_most_the_total_and_none_is_blamed_for_it(
    wire: Wire, metrics: NodeMetrics
) -> None:
    slow = [connect(wire, peer_link(f"slow-{n}", Unread())) for n in range(3)]
    for link in slow:
        _flood(wire, link, 10)  # each about 2.5 of its 4 allowed frames' worth
    assert not any(link.closed for link in slow)
    assert wire.queued_bytes() <= SETTINGS.max_queued_bytes_total
    assert metrics.registry.get_sample_value(
        "pouw_messages_dropped_total", {"reason": "outbound_full"}
    )


# -- sync --------------------------------------------------------------------------------------


class BlockSource:
    def __init__(self, sizes: list[int]) -> None:
        self.blocks = [bytes(size) for size in sizes]
        self.asked: list[int] = []

    def block_locator(self) -> list[bytes]:
        return [bytes(32)]

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        self.asked.append(limit)
        return self.blocks[:limit]

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        raise AssertionError("not imported in these tests")


def test_a_sync_reply_fits_in_one_message_and_asks_for_about_as_many_as_fit(wire: Wire) -> None:
    budget = LIMIT - ENVELOPE_OVERHEAD
    source = BlockSource([10_000] * 100)
    sync = Sync(wire, Scores().queue(), source, SETTINGS)
    request = GetBlocks([bytes(32)], 500)
    first = sync.blocks_for(request)
    assert source.asked == [FIRST_SERVE_BLOCKS]  # sizes unknown yet
    assert sum(len(block) + 8 for block in first) <= budget < 10_008 * (len(first) + 1)
    again = sync.blocks_for(request)
    assert source.asked[1] == budget // 10_008 == len(again)  # judged by the largest block
    source.blocks = [bytes(LIMIT)] * 10  # larger than a message: none sent
    assert sync.blocks_for(request) == []
    assert sync.blocks_for(request) == [] and source.asked[3] == 1  # and then one read


def test_sync_batches_refused_by_a_full_import_queue_end_that_sync(wire: Wire) -> None:
    queue = Scores().queue()
    sync = Sync(wire, queue, BlockSource([]), SETTINGS)
    links = [connect(wire, peer_link(name, work=10)) for name in ("a", "b", "c")]
    for link in links:
        sync.start(link)
        assert link.syncing and link.sync_asked is not None
        sync.on_blocks(link, Blocks([b"block"]))
    assert [link.syncing for link in links] == [True, True, False]
    assert links[2].synced_to == bytes(32)  # not retried until its tip moves
    with pytest.raises(DropMessage, match="unsolicited"):
        sync.on_blocks(links[2], Blocks([b"block"]))


def test_an_unanswered_getblocks_expires_and_a_closed_link_ends_its_sync(wire: Wire) -> None:
    sync = Sync(wire, Scores().queue(), BlockSource([]), SETTINGS)
    slow, gone = connect(wire, peer_link("slow")), connect(wire, peer_link("gone"))
    sync.start(slow)
    sync.start(gone)
    asked = slow.sync_asked
    assert asked is not None
    sync.expire(asked + SETTINGS.request_timeout_s)
    assert slow.syncing
    wire.disconnect(gone)
    assert not gone.syncing and gone.sync_asked is None
    sync.expire(asked + SETTINGS.request_timeout_s + 0.1)
    assert not slow.syncing and slow.sync_asked is None


# -- item gossip -------------------------------------------------------------------------------


def test_an_item_refused_by_a_full_import_queue_is_fetched_again_on_its_next_inv(
    wire: Wire, metrics: NodeMetrics
) -> None:
    queue = ImportQueue(2, penalise=wire.penalise, count_drop=wire.count_drop)
    sent = Recorded()
    link = connect(wire, peer_link("a", sent))
    gossip = ItemGossip(wire, queue, FakeNode(), SETTINGS, start_sync=_no_sync)
    blocks = [item(b"block %d" % number) for number in range(3)]
    ids = [block_id for block_id, _ in blocks]
    gossip.on_inv(link, Inv(ItemKind.BLOCK, ids))  # blocks are fetched whatever the room
    assert sent.bodies() == [GetData(ItemKind.BLOCK, ids)]
    for block_id, payload in blocks:
        gossip.on_data(link, Data(ItemKind.BLOCK, block_id, payload))
    assert dropped(metrics, "overloaded") == 1 and queue.room() == 0
    sent.frames.clear()
    gossip.on_inv(link, Inv(ItemKind.BLOCK, ids))
    assert sent.bodies() == [GetData(ItemKind.BLOCK, ids[2:])]  # the others wait for import


def test_an_announcement_beyond_the_import_queue_is_deferred_then_fetched(
    wire: Wire,
) -> None:
    queue = ImportQueue(2, penalise=wire.penalise, count_drop=wire.count_drop)
    sent = Recorded()
    link = connect(wire, peer_link("a", sent))
    node = FakeNode()
    gossip = ItemGossip(wire, queue, node, SETTINGS, start_sync=_no_sync)
    items = [item(b"item %d" % number) for number in range(5)]

    asked: list[int] = []

    async def scenario() -> None:
        worker = asyncio.ensure_future(queue.run())
        gossip.on_inv(link, Inv(ItemKind.TX, [item_id for item_id, _ in items]))
        while len(node.items) < len(items):
            for body in sent.bodies():
                if isinstance(body, GetData):
                    asked.append(len(body.ids))
                    for item_id in body.ids:
                        gossip.on_data(link, Data(ItemKind.TX, item_id, dict(items)[item_id]))
            sent.frames.clear()
            await asyncio.sleep(0)
        worker.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 5))
    assert all(node.received[item_id] == 1 for item_id, _ in items)
    assert asked == [2, 2, 1]  # never more than the queue can take


def _no_sync(link: Link) -> None:
    raise AssertionError("no orphans here")


# -- peering -----------------------------------------------------------------------------------


def test_a_ping_or_pong_showing_more_work_starts_a_sync_once_per_tip(wire: Wire) -> None:
    sent = Recorded()
    link = connect(wire, peer_link("a", sent, work=1))
    ours = FakeNode().chain_info()
    started: list[Link] = []
    peering = Peering(
        wire, Partition(), lambda: ours, SETTINGS, max_peers=8, start_sync=started.append
    )
    peering.on_ping(link, Ping(7, 0, bytes(32), ours.total_work))  # no more work than ours
    assert started == [] and sent.bodies() == [Pong(7, 0, ours.tip_hash, ours.total_work)]
    peering.on_pong(link, Pong(8, 5, b"t" * 32, 6))
    assert started == [link] and link.chain is not None and link.chain.height == 5
    link.synced_to = b"t" * 32  # we synced up to that tip already
    peering.on_pong(link, Pong(9, 5, b"t" * 32, 6))
    assert started == [link]


def test_a_verdict_reason_from_the_node_is_the_label_and_costs_an_item_rejection(
    wire: Wire, metrics: NodeMetrics
) -> None:
    link = connect(wire, peer_link("a"))
    for _ in range(3):
        wire.penalise(link, "loss_mismatch")
    assert dropped(metrics, "loss_mismatch") == 3 and not link.closed
    wire.penalise(link, DropReason.OVERLOADED)  # not the peer's fault
    assert link.score.current() == pytest.approx(75, abs=1)
    closed: list[Link] = []
    wire.on_disconnect(closed.append)
    wire.penalise(link, "malformed")  # a node's reason naming one of ours: its points (20)
    assert not link.closed and link.score.current() == pytest.approx(95, abs=1)
    wire.penalise(link, DropReason.BAD_VERSION)
    assert link.closed and closed == [link] and wire.links.bans.banned(link.peer_key)
    assert metrics.registry.get_sample_value("pouw_peers_banned_total") == 1
