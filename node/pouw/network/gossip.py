"""Item gossip: blocks, transactions, iteration batches, final models and verdicts travel as
`inv` (ids only) -> `getdata` -> `data` (or `items`, several small ones in one frame), so each
node receives each item about once. The node (an ItemHandler) judges what arrives: what it
accepted is announced on to the other peers, what it rejected costs the sender ban points.

Owns the ItemRelay (seen, asked for, deferred, served) and the batching of announcements.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from pouw.network.drops import DropReason
from pouw.network.imports import Imported, ImportQueue
from pouw.network.messages import (
    ENVELOPE_OVERHEAD,
    MAX_IDS,
    Data,
    DropMessage,
    GetData,
    Inv,
    ItemKind,
    ItemResult,
    Items,
    Verdict,
)
from pouw.network.peers import Link
from pouw.network.relay import ItemKey, ItemRelay
from pouw.network.settings import NetworkSettings
from pouw.network.wire import Wire

log = logging.getLogger("pouw.network")

PACK_BYTES = 256 * 1024
"""Items answering one getdata share a frame up to this size (one signature, not one each)."""
FETCH_BATCH = 256
"""Deferred announcements are fetched once this much of the import queue is free."""


class ItemHandler(Protocol):
    """What item gossip needs from the node."""

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool: ...

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None: ...

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult: ...


class ItemGossip:
    def __init__(
        self,
        wire: Wire,
        imports: ImportQueue,
        handler: ItemHandler,
        settings: NetworkSettings,
        *,
        start_sync: Callable[[Link], None],
    ) -> None:
        """`start_sync` is called with a peer that sent a block whose parent we lack."""
        self._wire = wire
        self._imports = imports
        self._handler = handler
        self._settings = s = settings
        self._start_sync = start_sync
        self._relay = ItemRelay(
            cache_items=s.cache_items, cache_bytes=s.cache_bytes, seen_items=s.seen_items
        )
        self._inv_dirty: dict[Link, None] = {}
        """Links with announcements waiting in their pending_inv."""
        self._inv_soon = False
        self._inv_timer: asyncio.TimerHandle | None = None
        wire.on_disconnect(self._disconnected)
        imports.after_each(self._fetch_deferred)

    async def publish(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        """Remember an item (to answer getdata) and announce it to every peer."""
        if len(payload) + ENVELOPE_OVERHEAD > self._settings.max_message_bytes:
            log.warning(
                "%s %s is too large to gossip (%d bytes)", kind, item_id.hex(), len(payload)
            )
            self._wire.count_drop(DropReason.TOO_LARGE)
            return
        key = (kind, item_id)
        self._relay.remember(key, payload)
        self._announce(key)

    def retry(self, now: float) -> None:
        """Ask the next announcer for items whose peer went away or did not answer in time."""
        for (kind, item_id), link in self._relay.retry(now, self._settings.request_timeout_s):
            self._wire.send(link, GetData(kind, [item_id]))

    def stop(self) -> None:
        if self._inv_timer is not None:
            self._inv_timer.cancel()

    def _disconnected(self, link: Link) -> None:
        self._inv_dirty.pop(link, None)

    # -- announcing ------------------------------------------------------------------------------

    def _announce(self, key: ItemKey) -> None:
        """Queue an inv of `key` to every peer that does not have it. Blocks go out on the
        next loop turn; other items wait up to settings.inv_delay_s, so that a stream of
        them shares frames (and signatures) instead of costing six frames each."""
        for link in self._wire.links.peer_links().values():
            if key in link.known:
                continue
            link.known.add(key)
            link.pending_inv.setdefault(key[0], []).append(key[1])
            self._inv_dirty[link] = None
        if not self._inv_dirty:
            return
        loop = asyncio.get_running_loop()
        if key[0] == ItemKind.BLOCK or self._settings.inv_delay_s <= 0:
            if not self._inv_soon:
                self._inv_soon = True
                loop.call_soon(self._flush_inv)
        elif self._inv_timer is None:
            self._inv_timer = loop.call_later(self._settings.inv_delay_s, self._flush_inv)

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
                    self._wire.send(link, Inv(kind, ids[start : start + MAX_IDS]))

    # -- fetching --------------------------------------------------------------------------------

    def on_inv(self, link: Link, inv: Inv) -> None:
        now = time.monotonic()
        room = self._fetch_room()
        wanted: list[bytes] = []
        for item_id in inv.ids:
            key = (inv.kind, item_id)
            link.known.add(key)
            if not self._relay.unknown(key):
                self._relay.should_fetch(key, link, now)  # remembered as a fallback source
                continue
            if self._handler.has_item(inv.kind, item_id):
                self._relay.seen.add(key)
                continue
            if inv.kind != ItemKind.BLOCK and len(wanted) >= room:
                self._relay.defer(key, link)
            elif self._relay.should_fetch(key, link, now):
                wanted.append(item_id)
        if wanted:
            self._wire.send(link, GetData(inv.kind, wanted))

    def _fetch_room(self) -> int:
        """Items the import queue can still take beyond those already asked for: asking for
        more would only drop them on arrival. Blocks are always fetched."""
        return self._imports.room() - len(self._relay.requests)

    def _fetch_deferred(self) -> None:
        """An import finished: fetch deferred announcements once a batch of room is free
        (one getdata for many items, not one each), or the queue has run dry."""
        if not self._relay.deferred:
            return
        room = self._fetch_room()
        if room < min(FETCH_BATCH, self._imports.size) and not self._imports.empty():
            return
        now = time.monotonic()
        wanted: dict[tuple[Link, ItemKind], list[bytes]] = {}
        for key, link in self._relay.take_deferred(room):
            if self._handler.has_item(*key):
                self._relay.seen.add(key)
            elif self._relay.should_fetch(key, link, now):
                wanted.setdefault((link, key[0]), []).append(key[1])
        for (link, kind), ids in wanted.items():
            for start in range(0, len(ids), MAX_IDS):
                self._wire.send(link, GetData(kind, ids[start : start + MAX_IDS]))

    def on_data(self, link: Link, data: Data) -> None:
        key = (data.kind, data.item_id)
        if not self._relay.arrived(key, link):
            raise DropMessage(DropReason.UNSOLICITED, f"{data.kind} we did not ask for")
        link.bucket.refund()  # answers to our own requests are not the peer's traffic
        self._import(link, data)

    def on_items(self, link: Link, items: Items) -> None:
        solicited = [
            (item_id, payload)
            for item_id, payload in items.items
            if self._relay.arrived((items.kind, item_id), link)
        ]
        if solicited:
            link.bucket.refund()
        for item_id, payload in solicited:
            self._import(link, Data(items.kind, item_id, payload))
        if len(solicited) < len(items.items):
            raise DropMessage(DropReason.UNSOLICITED, f"{items.kind} we did not ask for")

    def _import(self, link: Link, data: Data) -> None:
        self._imports.put(link, data, self)

    def refused(self, link: Link, body: Imported) -> None:
        """No room to import it: a later inv may fetch it again."""
        assert isinstance(body, Data)
        self._relay.forget((body.kind, body.item_id))

    def failed(self, link: Link, body: Imported) -> None:
        pass

    async def judge(self, link: Link, body: Imported) -> None:
        assert isinstance(body, Data)
        data = body
        key = (data.kind, data.item_id)
        peer = link.peer_key.hex() if link.peer_key else ""
        try:
            result = await self._handler.on_item(data.kind, data.item_id, data.payload, peer)
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

    # -- serving ---------------------------------------------------------------------------------

    def on_getdata(self, link: Link, request: GetData) -> None:
        """Answer with what we have: small items packed together, large ones alone; an item
        sent to this peer lately is not sent again (a peer repeating a getdata for a large
        item must not make us queue it again and again)."""
        budget, kind = self._settings.serve_bytes, request.kind
        pack: list[tuple[bytes, bytes]] = []
        packed = 0
        now = time.monotonic()
        repeated = False
        for item_id in request.ids:
            if link.served.recent((kind, item_id), now):
                repeated = True
                continue
            payload = self._relay.payload((kind, item_id))
            if payload is None:
                payload = self._handler.get_item(kind, item_id)
            if payload is None:
                continue
            budget -= len(payload)
            if budget < 0:
                break
            link.known.add((kind, item_id))
            link.served.add((kind, item_id), now)
            if pack and packed + len(payload) > PACK_BYTES:
                self._send_pack(link, kind, pack)
                pack, packed = [], 0
            pack.append((item_id, payload))
            packed += len(payload) + 40
        if pack:
            self._send_pack(link, kind, pack)
        if repeated:
            self._wire.count_drop(DropReason.REPEATED_GETDATA)

    def _send_pack(self, link: Link, kind: ItemKind, pack: list[tuple[bytes, bytes]]) -> None:
        if len(pack) == 1:
            self._wire.send(link, Data(kind, *pack[0]))
        else:
            self._wire.send(link, Items(kind, pack))
