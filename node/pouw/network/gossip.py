"""The Network: peers, announce-then-fetch gossip, chain sync, peer exchange, heartbeats.

Items (blocks, transactions, iteration messages, final models, verdicts) travel as `inv`
(ids only) -> `getdata` -> `data`, so each node receives each item about once. The node
(a NetworkHandler) decides what an item is worth; the network relays what it accepted and
raises the ban score of peers that sent garbage, until they are disconnected.

All methods run on the asyncio loop that called start().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
import zmq.asyncio

from pouw.crypto import KeyPair
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.messages import (
    Blocks,
    Body,
    ChainInfo,
    Data,
    DropMessage,
    GetBlocks,
    GetData,
    Hello,
    Inv,
    ItemKind,
    ItemResult,
    Peers,
    Ping,
    Pong,
    Verdict,
    open_frame,
    seal,
)
from pouw.network.peers import BanList, Link, PeerInfo, TokenBucket, ban_score
from pouw.network.transport import Transport, default_network_key

log = logging.getLogger(__name__)


class NetworkHandler(Protocol):
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
    burst: int = 4000
    ban_threshold: int = 100
    ban_seconds: float = 600.0
    heartbeat_s: float = 2.0
    peer_timeout_s: float = 10.0
    sync_batch: int = 500
    cache_items: int = 4096
    request_timeout_s: float = 5.0


class Network:
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
        self.settings = settings or NetworkSettings()
        self.chain_id = handler.chain_info().chain_id
        self._transport = Transport(
            secure=secure,
            network_key=network_key or default_network_key(self.chain_id),
            max_message_bytes=self.settings.max_message_bytes,
        )
        self._router: zmq.asyncio.Socket | None = None
        self._inbound: dict[bytes, Link] = {}
        self._outbound: dict[tuple[str, int], tuple[Link, zmq.asyncio.Socket]] = {}
        self._bans = BanList(self.settings.ban_seconds)
        self._known_addresses: set[tuple[str, int]] = set()
        self._cache: OrderedDict[tuple[ItemKind, bytes], bytes] = OrderedDict()
        self._requested: dict[tuple[ItemKind, bytes], float] = {}
        self._seen: OrderedDict[tuple[ItemKind, bytes], None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._syncing: set[int] = set()
        self._running = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._router, self._port = self._transport.bind_router(self.host, self._port)
        self._running = True
        self._spawn(self._receive_inbound())
        for host, port in self.bootstrap_peers:
            self._connect(host, port)
        self._spawn(self._heartbeat())

    async def stop(self) -> None:
        self._running = False
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link, dealer in self._outbound.values():
            link.closed = True
            dealer.close(linger=0)
        self._outbound.clear()
        if self._router is not None:
            self._router.close(linger=0)
        self._transport.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- peers ---------------------------------------------------------------------------------

    def _links(self) -> list[Link]:
        return [link for link, _ in self._outbound.values()] + list(self._inbound.values())

    def _peer_links(self) -> dict[bytes, Link]:
        """One ready link per peer key, outbound preferred."""
        chosen: dict[bytes, Link] = {}
        for link in self._links():
            if link.ready and link.peer_key is not None:
                current = chosen.get(link.peer_key)
                if current is None or (current.direction == "in" and link.direction == "out"):
                    chosen[link.peer_key] = link
        return chosen

    def peer_count(self) -> int:
        return len(self._peer_links())

    def peers(self) -> list[PeerInfo]:
        now = time.monotonic()
        return [
            PeerInfo(
                node_key=key.hex(),
                address=f"{link.listen[0]}:{link.listen[1]}" if link.listen else "",
                direction=link.direction,
                ban_score=link.score,
                seconds_since_seen=round(now - link.last_seen, 3),
                height=link.chain.height if link.chain else 0,
            )
            for key, link in self._peer_links().items()
        ]

    def _update_peer_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.peers.set(self.peer_count())

    def _connect(self, host: str, port: int) -> None:
        address = (host, port)
        if address in self._outbound or self._bans.banned(address):
            return
        if (host, port) == (self.host, self._port):
            return
        dealer = self._transport.connect_dealer(host, port)

        async def send(frame: bytes) -> None:
            await dealer.send(frame, copy=False)

        link = Link("out", send, self._bucket(), address=address)
        self._outbound[address] = (link, dealer)
        self._known_addresses.add(address)
        self._spawn(self._receive_outbound(link, dealer))
        self._send(link, self._hello())

    def _bucket(self) -> TokenBucket:
        return TokenBucket(self.settings.rate_per_s, self.settings.burst)

    def _close(self, link: Link) -> None:
        link.closed = True
        if link.direction == "out" and link.address is not None:
            entry = self._outbound.pop(link.address, None)
            if entry is not None:
                entry[1].close(linger=0)
        elif link.routing_id is not None:
            self._inbound.pop(link.routing_id, None)
        self._update_peer_gauge()

    def _penalise(self, link: Link, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.messages_dropped.labels(reason).inc()
        link.score += ban_score(reason)
        if link.score >= self.settings.ban_threshold and not link.closed:
            log.warning("banning peer %s (%s): score %d", link.address, reason, link.score)
            self._bans.ban(link.peer_key, link.address, link.listen, link.routing_id)
            if self.metrics is not None:
                self.metrics.peers_banned.inc()
            self._close(link)

    # -- receiving -----------------------------------------------------------------------------

    async def _receive_inbound(self) -> None:
        router = self._router
        assert router is not None
        while self._running:
            try:
                frames = await router.recv_multipart(copy=True)
            except zmq.ZMQError:
                if not self._running:
                    return
                continue
            if len(frames) != 2:
                if self.metrics is not None:
                    self.metrics.messages_dropped.labels("malformed").inc()
                continue
            routing_id, frame = frames
            if self._bans.banned(routing_id):
                continue
            link = self._inbound.get(routing_id)
            if link is None:
                link = Link("in", self._router_sender(routing_id), self._bucket())
                link.routing_id = routing_id
                self._inbound[routing_id] = link
            await self._receive(link, frame)

    def _router_sender(self, routing_id: bytes) -> Callable[[bytes], Awaitable[None]]:
        async def send(frame: bytes) -> None:
            router = self._router
            if router is not None:
                await router.send_multipart([routing_id, frame], copy=False)

        return send

    async def _receive_outbound(self, link: Link, dealer: zmq.asyncio.Socket) -> None:
        while self._running and not link.closed:
            try:
                frame = await dealer.recv(copy=True)
            except zmq.ZMQError:
                return
            await self._receive(link, frame)

    async def _receive(self, link: Link, frame: bytes) -> None:
        if link.closed:
            return
        if not link.bucket.take():
            self._penalise(link, "rate_limited")
            return
        try:
            envelope, body = open_frame(frame, self.chain_id, self.settings.max_message_bytes)
            if link.peer_key is not None and envelope.sender != link.peer_key:
                raise DropMessage("impersonation")
            if link.peer_key is None and not isinstance(body, Hello):
                raise DropMessage("unsolicited", "no hello yet")
            if self._bans.banned(envelope.sender):
                self._close(link)
                return
        except DropMessage as drop:
            self._penalise(link, drop.reason)
            return
        link.last_seen = time.monotonic()
        if self.metrics is not None:
            self.metrics.messages_received.labels(envelope.type).inc()
        try:
            await self._dispatch(link, envelope.sender, body)
        except DropMessage as drop:
            self._penalise(link, drop.reason)

    async def _dispatch(self, link: Link, sender: bytes, body: Body) -> None:
        if isinstance(body, Hello):
            self._on_hello(link, sender, body)
        elif isinstance(body, Ping):
            self._send(link, Pong(body.nonce))
        elif isinstance(body, Pong):
            pass
        elif isinstance(body, Peers):
            self._on_peers(body)
        elif isinstance(body, Inv):
            self._on_inv(link, body)
        elif isinstance(body, GetData):
            self._on_getdata(link, body)
        elif isinstance(body, Data):
            await self._on_data(link, body)
        elif isinstance(body, GetBlocks):
            self._send(link, Blocks(self._blocks_for(body)))
        elif isinstance(body, Blocks):
            await self._on_blocks(link, body)

    # -- handshake, peer exchange, heartbeats ----------------------------------------------------

    def _hello(self) -> Hello:
        info = self.handler.chain_info()
        return Hello(
            info.chain_id,
            info.genesis_hash,
            info.height,
            info.tip_hash,
            info.total_work,
            self.host,
            self._port,
        )

    def _on_hello(self, link: Link, sender: bytes, hello: Hello) -> None:
        ours = self.handler.chain_info()
        if hello.chain_id != ours.chain_id or hello.genesis_hash != ours.genesis_hash:
            raise DropMessage("wrong_chain", hello.chain_id)
        if sender == self.key.public_key:
            self._close(link)  # we dialled ourselves through another address
            return
        first = link.peer_key is None
        if first and sender not in self._peer_links() and self.peer_count() >= self.max_peers:
            self._send(link, Peers(self._addresses()))
            self._close(link)
            return
        link.peer_key = sender
        link.listen = (hello.listen_host, hello.listen_port)
        link.chain = ChainInfo(
            hello.chain_id, hello.genesis_hash, hello.height, hello.tip_hash, hello.total_work
        )
        self._known_addresses.add(link.listen)
        if first:
            if link.direction == "in":
                self._send(link, self._hello())
            self._send(link, Peers(self._addresses()))
            self._update_peer_gauge()
        if hello.total_work > ours.total_work:
            self._request_blocks(link)

    def _addresses(self) -> list[tuple[str, int]]:
        addresses = [link.listen for link in self._peer_links().values() if link.listen]
        return addresses[:256]

    def _on_peers(self, peers: Peers) -> None:
        for host, port in peers.addresses:
            address = (host, port)
            self._known_addresses.add(address)
            if self.peer_count() + self._dialling() >= self.max_peers:
                break
            if not self._is_connected_to(address):
                self._connect(host, port)

    def _dial_known(self, at_most: int = 2) -> None:
        """Below max_peers, dial a few addresses learnt from peer exchange."""
        room = self.max_peers - self.peer_count() - self._dialling()
        candidates = [
            address
            for address in self._known_addresses
            if not self._is_connected_to(address) and not self._bans.banned(address)
        ]
        random.shuffle(candidates)
        for host, port in candidates[: max(0, min(room, at_most))]:
            self._connect(host, port)

    def _dialling(self) -> int:
        return sum(1 for link, _ in self._outbound.values() if not link.ready)

    def _is_connected_to(self, address: tuple[str, int]) -> bool:
        if address in self._outbound:
            return True
        return any(link.listen == address for link in self._links() if link.ready)

    async def _heartbeat(self) -> None:
        settings = self.settings
        while self._running:
            await asyncio.sleep(settings.heartbeat_s)
            now = time.monotonic()
            for link in self._links():
                if now - link.last_seen > settings.peer_timeout_s:
                    self._close(link)
                elif link.ready:
                    self._send(link, Ping(random.getrandbits(32)))
                    if link.direction == "out":
                        self._send(link, self._hello())  # keeps their view of our tip fresh
            for host, port in self.bootstrap_peers:
                if not self._is_connected_to((host, port)):
                    self._connect(host, port)
            self._dial_known()
            for key, asked in list(self._requested.items()):
                if now - asked > settings.request_timeout_s:
                    del self._requested[key]
            self._update_peer_gauge()

    # -- gossip --------------------------------------------------------------------------------

    def _send(self, link: Link, body: Body) -> None:
        if link.closed:
            return
        frame = seal(self.key, self.chain_id, body, time.time_ns() // 1_000_000)
        self._spawn(self._deliver(link, frame))

    async def _deliver(self, link: Link, frame: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            await link.send(frame)

    def _remember(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        key = (kind, item_id)
        self._cache[key] = payload
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.cache_items:
            self._cache.popitem(last=False)
        self._mark_seen(key)

    def _mark_seen(self, key: tuple[ItemKind, bytes]) -> None:
        self._seen[key] = None
        while len(self._seen) > 8 * self.settings.cache_items:
            self._seen.popitem(last=False)

    async def publish(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        self._remember(kind, item_id, payload)
        self._announce(kind, item_id, exclude=None)

    def _announce(self, kind: ItemKind, item_id: bytes, exclude: bytes | None) -> None:
        for key, link in self._peer_links().items():
            if key != exclude:
                self._send(link, Inv(kind, [item_id]))

    def _on_inv(self, link: Link, inv: Inv) -> None:
        wanted = []
        for item_id in inv.ids:
            key = (inv.kind, item_id)
            if key in self._seen or key in self._requested:
                continue
            if self.handler.has_item(inv.kind, item_id):
                self._mark_seen(key)
                continue
            self._requested[key] = time.monotonic()
            wanted.append(item_id)
        if wanted:
            self._send(link, GetData(inv.kind, wanted))

    def _on_getdata(self, link: Link, request: GetData) -> None:
        for item_id in request.ids:
            payload = self._cache.get((request.kind, item_id))
            if payload is None:
                payload = self.handler.get_item(request.kind, item_id)
            if payload is not None:
                self._send(link, Data(request.kind, item_id, payload))

    async def _on_data(self, link: Link, data: Data) -> None:
        key = (data.kind, data.item_id)
        if self._requested.pop(key, None) is None:
            raise DropMessage("unsolicited", f"{data.kind} we did not ask for")
        peer = link.peer_key.hex() if link.peer_key else ""
        result = await self.handler.on_item(data.kind, data.item_id, data.payload, peer)
        if result.verdict == Verdict.ACCEPTED:
            self._remember(data.kind, data.item_id, data.payload)
            self._announce(data.kind, data.item_id, exclude=link.peer_key)
        elif result.verdict == Verdict.KNOWN:
            self._mark_seen(key)
        elif result.verdict == Verdict.ORPHAN:
            self._request_blocks(link)
        else:
            self._mark_seen(key)
            raise DropMessage(result.reason or "rejected_item")

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Ask the peer with the most work for what we lack."""
        ours = self.handler.chain_info().total_work
        best = max(
            (link for link in self._peer_links().values() if link.chain),
            key=lambda link: link.chain.total_work if link.chain else 0,
            default=None,
        )
        if best is not None and best.chain is not None and best.chain.total_work > ours:
            self._request_blocks(best)

    def _request_blocks(self, link: Link) -> None:
        if id(link) in self._syncing:
            return
        self._syncing.add(id(link))
        self._send(link, GetBlocks(self.handler.block_locator()[:128], self.settings.sync_batch))

    def _blocks_for(self, request: GetBlocks) -> list[bytes]:
        """As many of the requested blocks as fit in half a message."""
        budget = self.settings.max_message_bytes // 2
        blocks = self.handler.blocks_after(
            request.locator, min(request.limit, self.settings.sync_batch)
        )
        reply: list[bytes] = []
        for block in blocks:
            budget -= len(block) + 8
            if budget < 0 and reply:
                break
            reply.append(block)
        return reply

    async def _on_blocks(self, link: Link, reply: Blocks) -> None:
        self._syncing.discard(id(link))
        if not reply.blocks:
            return
        peer = link.peer_key.hex() if link.peer_key else ""
        result = await self.handler.on_sync_blocks(reply.blocks, peer)
        if result.verdict == Verdict.REJECTED:
            raise DropMessage(result.reason or "rejected_block")
        if len(reply.blocks) >= self.settings.sync_batch or (
            link.chain is not None
            and link.chain.total_work > self.handler.chain_info().total_work
            and result.verdict == Verdict.ACCEPTED
        ):
            self._request_blocks(link)
