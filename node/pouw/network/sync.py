"""Chain sync: getblocks with our locator to a peer with more work, its blocks imported in
order by the handler, then the next batch after the last block received, until the peer has
nothing more. Started by a hello or ping showing more work, by an orphan block, or by sync().
Also the serving side: our blocks after a peer's locator, as many as fit in one message.

Per-link progress lives on the Link (syncing, sync_asked, sync_last, synced_to).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import msgspec

from pouw.blockchain.block import BlockHeader
from pouw.network.drops import DropReason
from pouw.network.imports import Imported, ImportQueue
from pouw.network.messages import (
    ENVELOPE_OVERHEAD,
    MAX_LOCATOR,
    Blocks,
    DropMessage,
    GetBlocks,
    ItemResult,
    Verdict,
)
from pouw.network.peers import Link
from pouw.network.settings import NetworkSettings
from pouw.network.wire import Wire

FIRST_SERVE_BLOCKS = 32
"""Blocks a node serves in its first sync reply, before it knows how large its blocks are."""


class SyncHandler(Protocol):
    """What sync needs from the node."""

    def block_locator(self) -> list[bytes]: ...

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]: ...

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult: ...


class Sync:
    def __init__(
        self,
        wire: Wire,
        imports: ImportQueue,
        handler: SyncHandler,
        settings: NetworkSettings,
    ) -> None:
        self._wire = wire
        self._imports = imports
        self._handler = handler
        self._settings = settings
        self._idle = asyncio.Event()
        self._idle.set()
        self._block_size_hint: int | None = None
        wire.on_disconnect(self._disconnected)

    async def sync(self) -> None:
        """Ask the peer with the most work (as last heard) for the blocks after our locator,
        batch after batch, until it has nothing more; return then, at once without peers, or
        after settings.sync_timeout_s."""
        candidates = [link for link in self._wire.links.peer_links().values() if link.chain]
        best = max(candidates, key=_work, default=None)
        if best is not None:
            self.start(best)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.sync_timeout_s)

    @property
    def active(self) -> bool:
        """A sync with some peer is under way (started because it showed more work)."""
        return not self._idle.is_set()

    def start(self, link: Link) -> None:
        """Fetch `link`'s chain, unless we already are or it is no peer (yet)."""
        if link.syncing or not link.ready:
            return
        link.syncing = True
        link.sync_last = None
        self._idle.clear()
        self._ask_blocks(link, [])

    def end(self, link: Link) -> None:
        link.sync_asked = None
        if link.syncing:
            link.syncing = False
            link.synced_to = link.chain.tip_hash if link.chain else None
        if not any(other.syncing for other in self._wire.links.links()):
            self._idle.set()

    def expire(self, now: float) -> None:
        """End the syncs whose getblocks went unanswered for settings.request_timeout_s."""
        for link in self._wire.links.links():
            asked = link.sync_asked
            if asked is not None and now - asked > self._settings.request_timeout_s:
                self.end(link)

    def stop(self) -> None:
        """Let sync() callers return."""
        self._idle.set()

    def on_getblocks(self, link: Link, request: GetBlocks) -> None:
        self._wire.send(link, Blocks(self.blocks_for(request)))

    def blocks_for(self, request: GetBlocks) -> list[bytes]:
        """The blocks after the request's locator, as many as fit in one message. The handler
        is asked for about as many as fit, judged by the largest block it gave last time, so
        a chain of big blocks (model checkpoints) is not read 500 at a time to send three."""
        budget = self._settings.max_message_bytes - ENVELOPE_OVERHEAD
        limit = min(request.limit, self._settings.sync_batch)
        if self._block_size_hint is None:
            limit = min(limit, FIRST_SERVE_BLOCKS)
        else:
            limit = max(1, min(limit, budget // self._block_size_hint))
        blocks = self._handler.blocks_after(request.locator, limit)
        if blocks:
            self._block_size_hint = max(len(block) + 8 for block in blocks)
        reply: list[bytes] = []
        for block in blocks:
            budget -= len(block) + 8
            if budget < 0:
                break
            reply.append(block)
        return reply

    def on_blocks(self, link: Link, reply: Blocks) -> None:
        if link.sync_asked is None:
            raise DropMessage(DropReason.UNSOLICITED, "blocks we did not ask for")
        link.sync_asked = None
        link.bucket.refund()
        if not reply.blocks:
            self.end(link)
            return
        self._imports.put(link, reply, self)

    def _ask_blocks(self, link: Link, after: list[bytes]) -> None:
        locator = after + self._handler.block_locator()
        if len(locator) > MAX_LOCATOR:
            locator = locator[: MAX_LOCATOR - 1] + locator[-1:]  # keep genesis
        link.sync_asked = time.monotonic()
        self._wire.send(link, GetBlocks(locator, self._settings.sync_batch))

    def refused(self, link: Link, body: Imported) -> None:
        self.end(link)

    def failed(self, link: Link, body: Imported) -> None:
        self.end(link)

    async def judge(self, link: Link, body: Imported) -> None:
        """Import a batch, then ask for the next one (or end the sync)."""
        assert isinstance(body, Blocks)
        reply = body
        last = _block_hash(reply.blocks[-1])
        repeated = last is None or last == link.sync_last  # garbage, or the same answer again
        peer = link.peer_key.hex() if link.peer_key else ""
        result = await self._handler.on_sync_blocks(reply.blocks, peer)
        if result.verdict == Verdict.REJECTED:
            self.end(link)
            raise DropMessage(result.reason or DropReason.REJECTED)
        if result.verdict == Verdict.ORPHAN or repeated or not link.syncing or link.closed:
            self.end(link)
            return
        link.sync_last = last
        self._ask_blocks(link, [last] if last else [])

    def _disconnected(self, link: Link) -> None:
        if link.sync_asked is not None or link.syncing:
            self.end(link)


def _block_hash(encoded: bytes) -> bytes | None:
    """The hash of an encoded block from its header alone, None when it has none."""
    try:
        return _header_decoder.decode(encoded).header.hash()
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None


class _BlockHead(msgspec.Struct, array_like=True):
    header: BlockHeader


_header_decoder = msgspec.msgpack.Decoder(_BlockHead)


def _work(link: Link) -> int:
    return link.chain.total_work if link.chain else 0
