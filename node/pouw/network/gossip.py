"""The Network: announce-then-fetch gossip on top of the core, peering and sync parts.

Items (blocks, transactions, iteration batches, final models, verdicts) travel as `inv`
(ids only) -> `getdata` -> `data`, so each node receives each item about once. The node (a
NetworkHandler) decides what an item is worth: what it accepted is announced on to the other
peers; what it rejected raises the sender's ban score until the sender is disconnected and
refused for a while. Every frame is rate-limited, size-checked, signature-checked and decoded
into a bounded typed body before anything acts on it; whatever fails is dropped and counted
in pouw_messages_dropped_total{reason}.

The receive loops never wait for the node: items and sync batches go through one import
queue that a single worker drains in arrival order, so the handler sees one call at a time
while pings, inv and getdata keep flowing during a slow import (a verifier re-running blocks).

Threading: every method runs on the asyncio loop that called start(); the handler's methods
are called on that loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from pouw.network.core import ENVELOPE_OVERHEAD, NetworkCore, NetworkHandler, NetworkSettings, log
from pouw.network.drops import DropReason
from pouw.network.messages import (
    MAX_IDS,
    Blocks,
    Body,
    Bye,
    Data,
    DropMessage,
    GetBlocks,
    GetData,
    Inv,
    ItemKind,
    Items,
    Peers,
    Ping,
    Pong,
    Verdict,
)
from pouw.network.peering import PeeringMixin
from pouw.network.peers import Link, PeerInfo, format_address
from pouw.network.relay import ItemKey
from pouw.network.sync import SyncMixin

__all__ = ["Network", "NetworkHandler", "NetworkSettings", "PeerInfo"]

PACK_BYTES = 256 * 1024
"""Items answering one getdata share a frame up to this size (one signature, not one each)."""
FETCH_BATCH = 256
"""Deferred announcements are fetched once this much of the import queue is free."""


class Network(PeeringMixin, SyncMixin, NetworkCore):
    """A node's peer-to-peer endpoint. See the module docstring and NetworkCore.__init__."""

    # -- public API ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    def peers(self) -> list[PeerInfo]:
        now = time.monotonic()
        return [
            PeerInfo(
                node_key=key.hex(),
                address=format_address(link.listen) if link.listen else "",
                direction=link.direction,
                ban_score=round(link.score.current(now), 2),
                last_seen_s=round(now - link.last_seen, 3),
                height=link.chain.height if link.chain else 0,
                total_work=link.chain.total_work if link.chain else 0,
            )
            for key, link in self._links.peer_links().items()
        ]

    async def start(self) -> None:
        """Bind the ROUTER on host:port (port 0: a free one) and dial the bootstrap peers."""
        if self._running:
            return
        self._links.router, self._port = self._transport.bind_router(self.host, self._port)
        self._running = True
        for address in self.bootstrap_peers:
            self._links.book.add(address, bootstrap=True)
        self._spawn(self._read_router())
        self._spawn(self._import_worker())
        self._spawn(self._heartbeat())
        self._dial_more()

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._inv_timer is not None:
            self._inv_timer.cancel()
        for link in self._links.links():
            if link.ready:
                self._send(link, Bye("shutdown"))
        for task in [*self._tasks, *self._readers.values()]:
            task.cancel()
        for task in [*self._tasks, *self._readers.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()
        self._links.close_all(linger_ms=50)
        self._transport.close()
        self._sync_idle.set()
        self._update_gauge()

    async def publish(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        """Remember an item (to answer getdata) and announce it to every peer."""
        if len(payload) + ENVELOPE_OVERHEAD > self.settings.max_message_bytes:
            log.warning(
                "%s %s is too large to gossip (%d bytes)", kind, item_id.hex(), len(payload)
            )
            self._count_drop(DropReason.TOO_LARGE)
            return
        key = (kind, item_id)
        self._relay.remember(key, payload)
        self._announce(key)

    def _on_message(self, link: Link, body: Body) -> None:
        self._received(link, body)
        if isinstance(body, Ping):
            self._note_tip(link, body)
            info = self.handler.chain_info()
            self._send(link, Pong(body.nonce, info.height, info.tip_hash, info.total_work))
        elif isinstance(body, Pong):
            self._note_tip(link, body)
        elif isinstance(body, Peers):
            self._learn(body.addresses)
        elif isinstance(body, Inv):
            self._on_inv(link, body)
        elif isinstance(body, GetData):
            self._on_getdata(link, body)
        elif isinstance(body, Data):
            self._on_data(link, body)
        elif isinstance(body, Items):
            self._on_items(link, body)
        elif isinstance(body, GetBlocks):
            self._send(link, Blocks(self._blocks_for(body)))
        elif isinstance(body, Blocks):
            self._on_blocks(link, body)

    # -- gossip ----------------------------------------------------------------------------------

    def _announce(self, key: ItemKey) -> None:
        """Queue an inv of `key` to every peer that does not have it. Blocks go out on the
        next loop turn; other items wait up to settings.inv_delay_s, so that a stream of
        them shares frames (and signatures) instead of costing six frames each."""
        for link in self._links.peer_links().values():
            if key in link.known:
                continue
            link.known.add(key)
            link.pending_inv.setdefault(key[0], []).append(key[1])
            self._inv_dirty[link] = None
        if not self._inv_dirty:
            return
        loop = asyncio.get_running_loop()
        if key[0] == ItemKind.BLOCK or self.settings.inv_delay_s <= 0:
            if not self._inv_soon:
                self._inv_soon = True
                loop.call_soon(self._flush_inv)
        elif self._inv_timer is None:
            self._inv_timer = loop.call_later(self.settings.inv_delay_s, self._flush_inv)

    def _flush_inv(self) -> None:
        if self._inv_timer is not None:
            self._inv_timer.cancel()
            self._inv_timer = None
        self._inv_soon = False
        dirty, self._inv_dirty = self._inv_dirty, {}
        for link in dirty:
            pending, link.pending_inv = link.pending_inv, {}
            for kind, ids in pending.items():
                for start in range(0, len(ids), MAX_IDS):
                    self._send(link, Inv(kind, ids[start : start + MAX_IDS]))

    def _on_inv(self, link: Link, inv: Inv) -> None:
        now = time.monotonic()
        room = self._fetch_room()
        wanted: list[bytes] = []
        for item_id in inv.ids:
            key = (inv.kind, item_id)
            link.known.add(key)
            if not self._relay.unknown(key):
                self._relay.should_fetch(key, link, now)  # remembered as a fallback source
                continue
            if self.handler.has_item(inv.kind, item_id):
                self._relay.seen.add(key)
                continue
            if inv.kind != ItemKind.BLOCK and len(wanted) >= room:
                self._relay.defer(key, link)
            elif self._relay.should_fetch(key, link, now):
                wanted.append(item_id)
        if wanted:
            self._send(link, GetData(inv.kind, wanted))

    def _fetch_room(self) -> int:
        """Items the import queue can still take beyond those already asked for: asking for
        more would only drop them on arrival. Blocks are always fetched."""
        imports = self._imports
        return imports.maxsize - imports.qsize() - len(self._relay.requests)

    def _imported(self) -> None:
        """An import finished: fetch deferred announcements once a batch of room is free
        (one getdata for many items, not one each), or the queue has run dry."""
        if not self._relay.deferred:
            return
        room = self._fetch_room()
        if room < min(FETCH_BATCH, self._imports.maxsize) and not self._imports.empty():
            return
        now = time.monotonic()
        wanted: dict[tuple[Link, ItemKind], list[bytes]] = {}
        for key, link in self._relay.take_deferred(room):
            if self.handler.has_item(*key):
                self._relay.seen.add(key)
            elif self._relay.should_fetch(key, link, now):
                wanted.setdefault((link, key[0]), []).append(key[1])
        for (link, kind), ids in wanted.items():
            for start in range(0, len(ids), MAX_IDS):
                self._send(link, GetData(kind, ids[start : start + MAX_IDS]))

    def _on_getdata(self, link: Link, request: GetData) -> None:
        """Answer with what we have: small items packed together, large ones alone."""
        budget, kind = self.settings.serve_bytes, request.kind
        pack: list[tuple[bytes, bytes]] = []
        packed = 0
        for item_id in request.ids:
            payload = self._relay.payload((kind, item_id))
            if payload is None:
                payload = self.handler.get_item(kind, item_id)
            if payload is None:
                continue
            budget -= len(payload)
            if budget < 0:
                break
            link.known.add((kind, item_id))
            if pack and packed + len(payload) > PACK_BYTES:
                self._send_pack(link, kind, pack)
                pack, packed = [], 0
            pack.append((item_id, payload))
            packed += len(payload) + 40
        if pack:
            self._send_pack(link, kind, pack)

    def _send_pack(self, link: Link, kind: ItemKind, pack: list[tuple[bytes, bytes]]) -> None:
        if len(pack) == 1:
            self._send(link, Data(kind, *pack[0]))
        else:
            self._send(link, Items(kind, pack))

    def _on_data(self, link: Link, data: Data) -> None:
        key = (data.kind, data.item_id)
        if not self._relay.arrived(key, link):
            raise DropMessage(DropReason.UNSOLICITED, f"{data.kind} we did not ask for")
        link.bucket.refund()  # answers to our own requests are not the peer's traffic
        self._enqueue(link, data)

    def _on_items(self, link: Link, items: Items) -> None:
        solicited = [
            (item_id, payload)
            for item_id, payload in items.items
            if self._relay.arrived((items.kind, item_id), link)
        ]
        if solicited:
            link.bucket.refund()
        for item_id, payload in solicited:
            self._enqueue(link, Data(items.kind, item_id, payload))
        if len(solicited) < len(items.items):
            raise DropMessage(DropReason.UNSOLICITED, f"{items.kind} we did not ask for")

    async def _import_item(self, link: Link, data: Data) -> None:
        key = (data.kind, data.item_id)
        peer = link.peer_key.hex() if link.peer_key else ""
        try:
            result = await self.handler.on_item(data.kind, data.item_id, data.payload, peer)
        finally:
            self._relay.imported(key)
        if result.verdict == Verdict.ACCEPTED:
            self._relay.remember(key, data.payload)
            self._announce(key)
        elif result.verdict == Verdict.KNOWN:
            self._relay.seen.add(key)
        elif result.verdict == Verdict.ORPHAN:
            if not link.closed:
                self._start_sync(link)
        else:
            raise DropMessage(result.reason or DropReason.REJECTED)
