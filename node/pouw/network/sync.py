"""Chain sync: getblocks with our locator to a peer with more work, its blocks imported in
order by the handler, then the next batch after the last block received, until the peer has
nothing more. Started by a hello or ping showing more work, by an orphan block, or by sync()."""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec

from pouw.blockchain.block import BlockHeader
from pouw.network.core import ENVELOPE_OVERHEAD, NetworkCore
from pouw.network.drops import DropReason
from pouw.network.messages import MAX_LOCATOR, Blocks, DropMessage, GetBlocks, Verdict
from pouw.network.peers import Link

FIRST_SERVE_BLOCKS = 32
"""Blocks a node serves in its first sync reply, before it knows how large its blocks are."""


class SyncMixin(NetworkCore):
    async def sync(self) -> None:
        """Ask the peer with the most work (as last heard) for the blocks after our locator,
        batch after batch, until it has nothing more; return then, at once without peers, or
        after settings.sync_timeout_s."""
        candidates = [link for link in self._links.peer_links().values() if link.chain]
        best = max(candidates, key=_work, default=None)
        if best is not None:
            self._start_sync(best)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sync_idle.wait(), self.settings.sync_timeout_s)

    def _start_sync(self, link: Link) -> None:
        if link.syncing or not link.ready:
            return
        link.syncing = True
        link.sync_last = None
        self._sync_idle.clear()
        self._ask_blocks(link, [])

    def _ask_blocks(self, link: Link, after: list[bytes]) -> None:
        locator = after + self.handler.block_locator()
        if len(locator) > MAX_LOCATOR:
            locator = locator[: MAX_LOCATOR - 1] + locator[-1:]  # keep genesis
        link.sync_asked = time.monotonic()
        self._send(link, GetBlocks(locator, self.settings.sync_batch))

    def _end_sync(self, link: Link) -> None:
        link.sync_asked = None
        if link.syncing:
            link.syncing = False
            link.synced_to = link.chain.tip_hash if link.chain else None
        if not any(other.syncing for other in self._links.links()):
            self._sync_idle.set()

    def _blocks_for(self, request: GetBlocks) -> list[bytes]:
        """The blocks after the request's locator, as many as fit in one message. The handler
        is asked for about as many as fit, judged by the largest block it gave last time, so
        a chain of big blocks (model checkpoints) is not read 500 at a time to send three."""
        budget = self.settings.max_message_bytes - ENVELOPE_OVERHEAD
        limit = min(request.limit, self.settings.sync_batch)
        if self._block_size_hint is None:
            limit = min(limit, FIRST_SERVE_BLOCKS)
        else:
            limit = max(1, min(limit, budget // self._block_size_hint))
        blocks = self.handler.blocks_after(request.locator, limit)
        if blocks:
            self._block_size_hint = max(len(block) + 8 for block in blocks)
        reply: list[bytes] = []
        for block in blocks:
            budget -= len(block) + 8
            if budget < 0:
                break
            reply.append(block)
        return reply

    def _on_blocks(self, link: Link, reply: Blocks) -> None:
        if link.sync_asked is None:
            raise DropMessage(DropReason.UNSOLICITED, "blocks we did not ask for")
        link.sync_asked = None
        link.bucket.refund()
        if not reply.blocks:
            self._end_sync(link)
            return
        self._enqueue(link, reply)

    async def _import_blocks(self, link: Link, reply: Blocks) -> None:
        last = _block_hash(reply.blocks[-1])
        repeated = last is None or last == link.sync_last  # garbage, or the same answer again
        peer = link.peer_key.hex() if link.peer_key else ""
        result = await self.handler.on_sync_blocks(reply.blocks, peer)
        if result.verdict == Verdict.REJECTED:
            self._end_sync(link)
            raise DropMessage(result.reason or DropReason.REJECTED)
        if result.verdict == Verdict.ORPHAN or repeated or not link.syncing or link.closed:
            self._end_sync(link)
            return
        link.sync_last = last
        self._ask_blocks(link, [last] if last else [])


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
