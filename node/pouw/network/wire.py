"""The wire: our sockets and links, and what every frame goes through on its way in or out.

Out, send() seals a body into a signed frame and queues it without waiting. In, the read
loops take frames off the ROUTER and the DEALERs; each is rate-limited, size-, signature-,
clock- and ban-checked and decoded into a bounded typed body before it is handed on
(`Deliver`). Whatever fails is dropped and counted in pouw_messages_dropped_total{reason}; the
sender's link pays the reason's ban points, and a link past the threshold is banned together
with every other link of its peer. Parts that keep state per link hear of each closing link
(on_disconnect). The partition (faults.py) is enforced here, frame by frame.

Threading: everything runs on the asyncio loop that called start().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from pouw.crypto import KeyPair
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.drops import DropReason, ban_points
from pouw.network.faults import Partition
from pouw.network.links import LinkTable
from pouw.network.messages import Body, Bye, DropMessage, Hello, message_type, open_frame, seal
from pouw.network.peers import UNSPECIFIED_HOSTS, Link, OutboundBytes
from pouw.network.settings import NetworkSettings
from pouw.network.transport import CLOSE_LINGER_MS, Transport, peer_ip

log = logging.getLogger("pouw.network")

Deliver = Callable[[Link, bytes, Body], None]
"""Takes a checked body with its link and its sender's node key: a hello from any peer not cut
off, a goodbye on any link, anything else only from the peer that said hello on the link.
It may raise DropMessage to refuse the body."""


class Wire:
    def __init__(
        self,
        key: KeyPair,
        chain_id: str,
        deliver: Deliver,
        *,
        host: str,
        port: int,
        secure: bool,
        network_key: bytes,
        max_peers: int,
        partition: Partition,
        settings: NetworkSettings,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.key = key
        self.chain_id = chain_id
        self.host = host
        self.port = port
        """Where the ROUTER listens (the port it got once started)."""
        self.settings = s = settings
        self.metrics = metrics
        self._deliver = deliver
        self._partition = partition
        self._transport = Transport(
            secure=secure, network_key=network_key, max_message_bytes=s.max_message_bytes
        )
        self.links = LinkTable(
            self._transport,
            rate_per_s=s.rate_per_s,
            burst=s.burst,
            ban_seconds=s.ban_seconds,
            ban_decay_per_s=s.ban_decay_per_s,
            max_pending_inbound=max(64, 2 * max_peers),
            max_backoff_s=s.max_backoff_s,
        )
        self._readers: dict[Link, asyncio.Task[None]] = {}
        self._disconnect_listeners: list[Callable[[Link], None]] = []
        self._queued = 0
        """Bytes handed to ZeroMQ for any peer and not written out yet."""
        self._draining: list[OutboundBytes] = []
        """What closed links left unwritten."""
        self._running = False

    # -- sockets ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the ROUTER on host:port (port 0: a free one); read_router() then reads it."""
        self.links.router, self.port = self._transport.bind_router(self.host, self.port)
        self._running = True

    def dial(self, address: tuple[str, int]) -> Link:
        """A new outbound link to `address`, read from at once."""
        link, dealer = self.links.dial(address)
        self._readers[link] = asyncio.ensure_future(self._read_dealer(link, dealer))
        return link

    def readers(self) -> list[asyncio.Task[None]]:
        """The tasks reading our DEALERs: to be cancelled (and awaited) before close()."""
        return list(self._readers.values())

    def close(self, linger_ms: int = CLOSE_LINGER_MS) -> None:
        """Close every link and socket; frames still queued may leave for `linger_ms`."""
        self._running = False
        self._readers.clear()
        self.links.close_all(linger_ms=linger_ms)
        self._transport.close(linger_ms=linger_ms)

    # -- links -----------------------------------------------------------------------------------

    def on_disconnect(self, listener: Callable[[Link], None]) -> None:
        """Call `listener` with every link that closes, after it closed."""
        self._disconnect_listeners.append(listener)

    def send(self, link: Link, body: Body) -> None:
        if link.closed or link.outbound.stalled:
            return
        if self._partition and self._partition.blocks(link):
            self.count_drop(DropReason.PARTITIONED)
            return
        frame = seal(self.key, self.chain_id, body, time.time_ns() // 1_000_000)
        if not self._room_for(link, len(frame)):
            return
        sent = link.send(frame)
        if sent is None:
            self.count_drop(DropReason.SEND_FAILED)  # its queue is full or it is gone
            return
        self._queued += link.outbound.add(sent, len(frame))

    def _room_for(self, link: Link, size: int) -> bool:
        """Whether `size` more bytes may be queued to `link`. A peer with more than
        max_queued_bytes unread is not reading: dropped and penalised. Past the total for
        all peers the frame is dropped (not this peer's fault)."""
        outbound = self.settings.max_queued_bytes, self.settings.max_queued_bytes_total
        self._queued -= link.outbound.settle()
        if link.outbound.bytes + size > outbound[0]:
            log.warning("peer %s does not read: %d bytes unsent", link.label, link.outbound.bytes)
            link.outbound.stalled = True
            self.penalise(link, DropReason.SLOW_READER)
            self.disconnect(link)
            return False
        if self._queued + size > outbound[1]:
            self._settle_all()
            if self._queued + size > outbound[1]:
                self.count_drop(DropReason.OUTBOUND_FULL)
                return False
        return True

    def _settle_all(self) -> None:
        for link in self.links.links():
            self._queued -= link.outbound.settle()
        self._settle_draining()

    def _settle_draining(self) -> None:
        for closed in self._draining:
            self._queued -= closed.settle()
        self._draining = [closed for closed in self._draining if closed.frames]

    def queued_bytes(self, link: Link | None = None) -> int:
        """Bytes handed to ZeroMQ and not written out yet: to `link`, or to every peer (links
        already closed included)."""
        if link is not None:
            self._queued -= link.outbound.settle()
            return link.outbound.bytes
        self._settle_all()
        return self._queued

    def disconnect(self, link: Link, *, failed: bool = False, bye: str | None = None) -> None:
        """Close `link` (after a goodbye saying `bye`); `failed` backs off its address."""
        if link.closed:
            return
        if bye is not None:
            self.send(link, Bye(bye))
        self.links.remove(link, linger_ms=50 if bye else 0)
        self._settle_draining()
        if link.outbound.frames:
            self._draining.append(link.outbound)  # a ROUTER holds them until the peer goes
        reader = self._readers.pop(link, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if failed and link.address is not None:
            self.links.book.failed(link.address)
        for listener in self._disconnect_listeners:
            listener(link)
        self.update_gauge()

    def penalise(self, link: Link, reason: DropReason | str) -> None:
        """Count a drop, and add its ban points to the link; past the threshold its peer is
        banned and all its links close."""
        self.count_drop(reason)
        points = ban_points(reason)
        if points <= 0 or link.closed:
            return
        if link.score.add(points) >= self.settings.ban_threshold:
            log.warning("banning peer %s (%s)", link.label, reason)
            self.links.ban(link)
            if self.metrics is not None:
                self.metrics.peers_banned.inc()
            for other in self.links.links():
                if other is link or (link.peer_key and other.peer_key == link.peer_key):
                    self.disconnect(other, bye="banned")

    def count_drop(self, reason: DropReason | str) -> None:
        if self.metrics is not None:
            self.metrics.messages_dropped.labels(reason).inc()

    def received(self, link: Link, body: Body) -> None:
        """A body from the link's peer counts as a sign of life."""
        link.last_seen = time.monotonic()
        if self.metrics is not None:
            self.metrics.messages_received.labels(message_type(body)).inc()

    def update_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.peers.set(self.links.peer_count())

    # -- receiving -------------------------------------------------------------------------------

    async def read_router(self) -> None:
        router = self.links.router
        assert router is not None
        while self._running:
            try:
                frames = await router.recv_multipart(copy=False)
            except zmq.ZMQError:
                if not self._running:
                    return
                continue
            routing_id = frames[0].bytes
            if self.links.bans.banned(routing_id):
                self.count_drop(DropReason.BANNED)
                continue
            link = self.links.inbound_link(routing_id)
            if link is None:
                self.count_drop(DropReason.TOO_MANY_LINKS)
                continue
            if link.remote_ip is None:
                link.remote_ip = peer_ip(frames[-1])
            if len(frames) != 2:
                self.penalise(link, DropReason.MALFORMED)
                continue
            self._receive(link, frames[1].bytes)

    async def _read_dealer(self, link: Link, dealer: zmq.asyncio.Socket) -> None:
        while self._running and not link.closed:
            try:
                frames = await dealer.recv_multipart(copy=True)
            except zmq.ZMQError:
                return
            if len(frames) != 1:
                self.penalise(link, DropReason.MALFORMED)
                continue
            self._receive(link, frames[0])

    def _receive(self, link: Link, frame: bytes) -> None:
        if link.closed:
            return
        if self._partition and self._partition.blocks(link):
            self.count_drop(DropReason.PARTITIONED)
            return
        if not link.bucket.take():
            self.penalise(link, DropReason.RATE_LIMITED)
            return
        try:
            envelope, body = open_frame(frame, self.chain_id, self.settings.max_message_bytes)
            skew_ms = abs(time.time_ns() // 1_000_000 - envelope.timestamp_ms)
            if skew_ms > 1000 * self.settings.max_clock_skew_s:
                raise DropMessage(DropReason.STALE, f"clock off by {skew_ms} ms")
            if self._partition and self._partition.blocks_sender(envelope.sender):
                self.count_drop(DropReason.PARTITIONED)
                return
            if self.links.bans.banned(envelope.sender):
                self.count_drop(DropReason.BANNED)
                self.disconnect(link, bye="banned")
                return
            self._hand_on(link, envelope.sender, body)
        except DropMessage as drop:
            self.penalise(link, drop.reason)
            return
        except Exception:
            log.exception("handling a message from %s failed", link.label)
            self.count_drop(DropReason.HANDLER_ERROR)
            return

    def _hand_on(self, link: Link, sender: bytes, body: Body) -> None:
        if isinstance(body, Hello):
            if self._partition and self._hello_from_cut_peer(link, sender, body):
                return
        elif isinstance(body, Bye):
            self.received(link, body)
        elif not link.ready:
            if time.monotonic() - link.last_bye > 1.0:  # a peer that lost us: tell it once
                link.last_bye = time.monotonic()
                self.send(link, Bye("hello_first"))
            raise DropMessage(DropReason.NO_HELLO)
        elif sender != link.peer_key:
            raise DropMessage(DropReason.IMPERSONATION)
        else:
            self.received(link, body)
        self._deliver(link, sender, body)

    def _hello_from_cut_peer(self, link: Link, sender: bytes, hello: Hello) -> bool:
        """A hello from a peer we are cut off from (its listen address names it): its link
        is marked with that address, so that everything else on it is dropped too."""
        listen = (hello.listen_host, hello.listen_port)
        if hello.listen_host in UNSPECIFIED_HOSTS:
            listen = (link.remote_ip or hello.listen_host, hello.listen_port)
        if listen not in self._partition.blocked:
            return False
        link.listen = listen
        self._partition.learn(sender, listen)
        self.count_drop(DropReason.PARTITIONED)
        return True
