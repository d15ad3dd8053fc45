"""The network's shared state and plumbing: settings, the handler protocol, sending, closing
and scoring links, and reading frames off the sockets into typed, checked bodies.

`Network` (gossip.py) is this core plus the peering (peering.py) and sync (sync.py) parts.
Threading: everything runs on the asyncio loop that called start(); the handler's methods are
called on that loop too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio

from pouw.crypto import KeyPair
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.drops import DropReason, ban_points
from pouw.network.faults import Partition
from pouw.network.links import LinkTable
from pouw.network.messages import (
    Blocks,
    Body,
    Bye,
    ChainInfo,
    Data,
    DropMessage,
    Hello,
    ItemKind,
    ItemResult,
    message_type,
    open_frame,
    seal,
)
from pouw.network.peers import UNSPECIFIED_HOSTS, Link
from pouw.network.relay import ItemRelay
from pouw.network.transport import Transport, default_network_key, peer_ip

log = logging.getLogger("pouw.network")

ENVELOPE_OVERHEAD = 4096
"""Bytes kept free in a frame for the envelope around a payload."""


class NetworkHandler(Protocol):
    """What the network needs from the node (implemented by PoUWNode)."""

    def chain_info(self) -> ChainInfo: ...

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool: ...

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None: ...

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult: ...

    def block_locator(self) -> list[bytes]: ...

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]: ...

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult: ...


@dataclass(frozen=True)
class NetworkSettings:
    max_message_bytes: int = 16 * 1024 * 1024
    rate_per_s: float = 2000.0
    """Frames a second one link may send us (token bucket), beyond `burst`."""
    burst: int = 4000
    ban_threshold: int = 100
    ban_seconds: float = 600.0
    ban_decay_per_s: float = 0.1
    """Ban points a link sheds a second: rare honest slips fade, bursts of garbage do not."""
    heartbeat_s: float = 2.0
    peer_timeout_s: float = 10.0
    """A peer silent this long is dropped; a dial unanswered this long has failed."""
    sync_batch: int = 500
    sync_timeout_s: float = 120.0
    """The longest sync() waits."""
    request_timeout_s: float = 5.0
    """An unanswered getdata or getblocks is asked of another peer (or again) after this."""
    exchange_s: float = 30.0
    """Peer exchange period (also on every new connection)."""
    max_dials: int = 8
    """Outbound connections being set up at once."""
    max_backoff_s: float = 30.0
    """Longest wait before redialling a peer that failed (bootstrap peers included)."""
    max_clock_skew_s: float = 600.0
    cache_items: int = 4096
    cache_bytes: int = 64 * 1024 * 1024
    seen_items: int = 65_536
    inv_delay_s: float = 0.005
    """Announcements of items other than blocks wait this long to be sent together."""
    import_queue: int = 4096
    serve_bytes: int = 32 * 1024 * 1024
    """Most payload bytes one getdata is answered with."""
    partition_file: Path | None = None
    """Fault injection for tests (faults.py): a file of peer addresses to cut this node off
    from, re-read every heartbeat. None: POUW_FAULT_PARTITION_FILE when set, else no file."""


class NetworkCore:
    def __init__(
        self,
        key: KeyPair,
        handler: NetworkHandler,
        *,
        host: str,
        port: int,
        bootstrap_peers: Sequence[tuple[str, int]] = (),
        max_peers: int = 50,
        secure: bool = True,
        network_key: bytes | None = None,
        metrics: NodeMetrics | None = None,
        settings: NetworkSettings | None = None,
    ) -> None:
        self.key = key
        self.handler = handler
        self.host = host
        self._port = port
        self.bootstrap_peers = [(h, p) for h, p in bootstrap_peers]
        self.max_peers = max_peers
        self.secure = secure
        self.metrics = metrics
        self.settings = s = settings or NetworkSettings()
        self.chain_id = handler.chain_info().chain_id
        self._transport = Transport(
            secure=secure,
            network_key=network_key or default_network_key(self.chain_id),
            max_message_bytes=s.max_message_bytes,
        )
        self._links = LinkTable(
            self._transport,
            rate_per_s=s.rate_per_s,
            burst=s.burst,
            ban_seconds=s.ban_seconds,
            ban_decay_per_s=s.ban_decay_per_s,
            max_pending_inbound=max(64, 2 * max_peers),
            max_backoff_s=s.max_backoff_s,
        )
        self._relay = ItemRelay(
            cache_items=s.cache_items, cache_bytes=s.cache_bytes, seen_items=s.seen_items
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._readers: dict[Link, asyncio.Task[None]] = {}
        self._imports: asyncio.Queue[tuple[Link, Data | Blocks]] = asyncio.Queue(s.import_queue)
        self._inv_dirty: dict[Link, None] = {}
        self._inv_soon = False
        self._inv_timer: asyncio.TimerHandle | None = None
        self._sync_idle = asyncio.Event()
        self._sync_idle.set()
        self._last_exchange = 0.0
        self._block_size_hint: int | None = None
        self._running = False
        self.partition = (
            Partition(path=s.partition_file) if s.partition_file else Partition.from_environment()
        )
        """Peers this node is cut off from (fault injection; empty unless a test cuts)."""

    # -- provided by the parts (declared here so that each part type-checks alone) -------------

    def _on_hello(self, link: Link, sender: bytes, hello: Hello) -> None:
        raise NotImplementedError

    def _on_bye(self, link: Link, bye: Bye) -> None:
        raise NotImplementedError

    def _on_message(self, link: Link, body: Body) -> None:
        raise NotImplementedError

    def _imported(self) -> None:
        raise NotImplementedError

    def _start_sync(self, link: Link) -> None:
        raise NotImplementedError

    def _end_sync(self, link: Link) -> None:
        raise NotImplementedError

    def _dial_more(self) -> None:
        raise NotImplementedError

    async def _import_item(self, link: Link, data: Data) -> None:
        raise NotImplementedError

    async def _import_blocks(self, link: Link, reply: Blocks) -> None:
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------------

    def peer_count(self) -> int:
        return self._links.peer_count()

    def _send(self, link: Link, body: Body) -> None:
        if link.closed:
            return
        if self.partition and self.partition.blocks(link):
            self._count_drop(DropReason.PARTITIONED)
            return
        frame = seal(self.key, self.chain_id, body, time.time_ns() // 1_000_000)
        if not link.send(frame):
            self._count_drop(DropReason.SEND_FAILED)  # its queue is full or it is gone

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close(self, link: Link, *, failed: bool = False, bye: str | None = None) -> None:
        if link.closed:
            return
        if bye is not None:
            self._send(link, Bye(bye))
        self._links.remove(link, linger_ms=50 if bye else 0)
        reader = self._readers.pop(link, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if failed and link.address is not None:
            self._links.book.failed(link.address)
        if link.sync_asked is not None or link.syncing:
            self._end_sync(link)
        self._inv_dirty.pop(link, None)
        self._update_gauge()

    def _penalise(self, link: Link, reason: DropReason | str) -> None:
        self._count_drop(reason)
        points = ban_points(reason)
        if points <= 0 or link.closed:
            return
        if link.score.add(points) >= self.settings.ban_threshold:
            log.warning("banning peer %s (%s)", link.label, reason)
            self._links.ban(link)
            if self.metrics is not None:
                self.metrics.peers_banned.inc()
            for other in self._links.links():
                if other is link or (link.peer_key and other.peer_key == link.peer_key):
                    self._close(other, bye="banned")

    def _count_drop(self, reason: DropReason | str) -> None:
        if self.metrics is not None:
            self.metrics.messages_dropped.labels(reason).inc()

    def _update_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.peers.set(self.peer_count())

    # -- receiving -------------------------------------------------------------------------------

    async def _read_router(self) -> None:
        router = self._links.router
        assert router is not None
        while self._running:
            try:
                frames = await router.recv_multipart(copy=False)
            except zmq.ZMQError:
                if not self._running:
                    return
                continue
            routing_id = frames[0].bytes
            if self._links.bans.banned(routing_id):
                self._count_drop(DropReason.BANNED)
                continue
            link = self._links.inbound_link(routing_id)
            if link is None:
                self._count_drop(DropReason.TOO_MANY_LINKS)
                continue
            if link.remote_ip is None:
                link.remote_ip = peer_ip(frames[-1])
            if len(frames) != 2:
                self._penalise(link, DropReason.MALFORMED)
                continue
            self._receive(link, frames[1].bytes)

    async def _read_dealer(self, link: Link, dealer: zmq.asyncio.Socket) -> None:
        while self._running and not link.closed:
            try:
                frames = await dealer.recv_multipart(copy=True)
            except zmq.ZMQError:
                return
            if len(frames) != 1:
                self._penalise(link, DropReason.MALFORMED)
                continue
            self._receive(link, frames[0])

    def _receive(self, link: Link, frame: bytes) -> None:
        if link.closed:
            return
        if self.partition and self.partition.blocks(link):
            self._count_drop(DropReason.PARTITIONED)
            return
        if not link.bucket.take():
            self._penalise(link, DropReason.RATE_LIMITED)
            return
        try:
            envelope, body = open_frame(frame, self.chain_id, self.settings.max_message_bytes)
            skew_ms = abs(time.time_ns() // 1_000_000 - envelope.timestamp_ms)
            if skew_ms > 1000 * self.settings.max_clock_skew_s:
                raise DropMessage(DropReason.STALE, f"clock off by {skew_ms} ms")
            if self.partition and self.partition.blocks_sender(envelope.sender):
                self._count_drop(DropReason.PARTITIONED)
                return
            if self._links.bans.banned(envelope.sender):
                self._count_drop(DropReason.BANNED)
                self._close(link, bye="banned")
                return
            self._dispatch(link, envelope.sender, body)
        except DropMessage as drop:
            self._penalise(link, drop.reason)
            return
        except Exception:
            log.exception("handling a message from %s failed", link.label)
            self._count_drop(DropReason.HANDLER_ERROR)
            return

    def _dispatch(self, link: Link, sender: bytes, body: Body) -> None:
        if isinstance(body, Hello):
            if self.partition and self._hello_from_cut_peer(link, sender, body):
                return
            self._on_hello(link, sender, body)
        elif isinstance(body, Bye):
            self._received(link, body)
            self._on_bye(link, body)
        elif not link.ready:
            if time.monotonic() - link.last_bye > 1.0:  # a peer that lost us: tell it once
                link.last_bye = time.monotonic()
                self._send(link, Bye("hello_first"))
            raise DropMessage(DropReason.NO_HELLO)
        elif sender != link.peer_key:
            raise DropMessage(DropReason.IMPERSONATION)
        else:
            self._on_message(link, body)

    def _hello_from_cut_peer(self, link: Link, sender: bytes, hello: Hello) -> bool:
        """A hello from a peer we are cut off from (its listen address names it): its link
        is marked with that address, so that everything else on it is dropped too."""
        listen = (hello.listen_host, hello.listen_port)
        if hello.listen_host in UNSPECIFIED_HOSTS:
            listen = (link.remote_ip or hello.listen_host, hello.listen_port)
        if listen not in self.partition.blocked:
            return False
        link.listen = listen
        self.partition.learn(sender, listen)
        self._count_drop(DropReason.PARTITIONED)
        return True

    def _received(self, link: Link, body: Body) -> None:
        link.last_seen = time.monotonic()
        if self.metrics is not None:
            self.metrics.messages_received.labels(message_type(body)).inc()

    # -- the import queue ------------------------------------------------------------------------

    def _enqueue(self, link: Link, job: Data | Blocks) -> None:
        try:
            self._imports.put_nowait((link, job))
        except asyncio.QueueFull:
            self._count_drop(DropReason.OVERLOADED)
            if isinstance(job, Data):
                self._relay.forget((job.kind, job.item_id))
            else:
                self._end_sync(link)

    async def _import_worker(self) -> None:
        while True:
            link, job = await self._imports.get()
            try:
                if isinstance(job, Data):
                    await self._import_item(link, job)
                else:
                    await self._import_blocks(link, job)
            except DropMessage as drop:
                self._penalise(link, drop.reason)
            except Exception:
                log.exception("the node failed on a %s from %s", message_type(job), link.label)
                self._count_drop(DropReason.HANDLER_ERROR)
                if isinstance(job, Blocks):
                    self._end_sync(link)
            self._imported()
            # A queue that is never empty never suspends get(): without this the worker would
            # keep the loop through a flood, and timers, pings and the miner's blocks would wait.
            await asyncio.sleep(0)
