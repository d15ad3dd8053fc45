"""The Network: a node's peer-to-peer endpoint, composed of the wire (sockets, links, checks
on every frame), the import queue, item gossip, chain sync and peering. It builds them,
routes each message to the part that owns it, drives their heartbeat and offers the API the
node uses.

Items travel as `inv` -> `getdata` -> `data`, so each node receives each item about once
(gossip.py). The node (a NetworkHandler) decides what an item is worth: what it accepted is
announced on to the other peers; what it rejected raises the sender's ban score until the
sender is disconnected and refused for a while. Every frame is rate-limited, size-checked,
signature-checked and decoded into a bounded typed body before anything acts on it; whatever
fails is dropped and counted in pouw_messages_dropped_total{reason} (wire.py, drops.py).

Threading: every method runs on the asyncio loop that called start(); the handler's methods
are called on that loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Protocol

from pouw.crypto import KeyPair
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.faults import Partition
from pouw.network.gossip import ItemGossip, ItemHandler
from pouw.network.imports import ImportQueue
from pouw.network.messages import (
    Address,
    Blocks,
    Body,
    Bye,
    ChainInfo,
    Data,
    GetBlocks,
    GetData,
    Hello,
    Inv,
    ItemKind,
    Items,
    Peers,
    Ping,
    Pong,
)
from pouw.network.peering import Peering
from pouw.network.peers import Link, PeerInfo
from pouw.network.settings import NetworkSettings
from pouw.network.sync import Sync, SyncHandler
from pouw.network.transport import default_network_key
from pouw.network.wire import Wire

__all__ = ["Network", "NetworkHandler", "NetworkSettings", "PeerInfo"]

log = logging.getLogger("pouw.network")


class NetworkHandler(ItemHandler, SyncHandler, Protocol):
    """What the network needs from the node (pouw.node.intake.Intake): its chain and tip,
    and the items and sync batches it judges."""

    def chain_info(self) -> ChainInfo: ...


class Network:
    """A node's peer-to-peer endpoint (see the module docstring)."""

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
        self.bootstrap_peers = [(h, p) for h, p in bootstrap_peers]
        self.max_peers = max_peers
        self.secure = secure
        self.metrics = metrics
        self.settings = s = settings or NetworkSettings()
        self.chain_id = handler.chain_info().chain_id
        self.partition = (
            Partition(path=s.partition_file) if s.partition_file else Partition.from_environment()
        )
        """Peers this node is cut off from (fault injection; empty unless a test cuts)."""
        self._wire = Wire(
            key,
            self.chain_id,
            self._route,
            host=host,
            port=port,
            secure=secure,
            network_key=network_key or default_network_key(self.chain_id),
            max_peers=max_peers,
            partition=self.partition,
            settings=s,
            metrics=metrics,
        )
        self._imports = ImportQueue(
            s.import_queue, penalise=self._wire.penalise, count_drop=self._wire.count_drop
        )
        self._sync = Sync(self._wire, self._imports, handler, s)
        self._gossip = ItemGossip(
            self._wire, self._imports, handler, s, start_sync=self._sync.start
        )
        self._peering = Peering(
            self._wire,
            self.partition,
            handler.chain_info,
            s,
            max_peers=max_peers,
            start_sync=self._sync.start,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False

    # -- public API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._wire.port

    def peers(self) -> list[PeerInfo]:
        return self._peering.peers()

    def peer_count(self) -> int:
        return self._wire.links.peer_count()

    def queued_bytes(self) -> int:
        """Bytes queued to peers that they have not read yet (closed links' included)."""
        return self._wire.queued_bytes()

    def import_backlog(self) -> int:
        """Items and sync batches received but not yet judged by the node."""
        return self._imports.waiting()

    def catching_up(self) -> bool:
        """Whether a sync from a peer with more work is under way."""
        return self._sync.active

    async def start(self) -> None:
        """Bind the ROUTER on host:port (port 0: a free one) and dial the bootstrap peers."""
        if self._running:
            return
        self._wire.start()
        self._running = True
        self._spawn(self._wire.read_router())
        self._spawn(self._imports.run())
        self._spawn(self._heartbeat())
        self._peering.start(self.bootstrap_peers)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._gossip.stop()
        self._peering.stop()
        tasks = [*self._tasks, *self._wire.readers()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._wire.close()
        self._sync.stop()
        self._wire.update_gauge()

    async def publish(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        """Remember an item (to answer getdata) and announce it to every peer."""
        await self._gossip.publish(kind, item_id, payload)

    async def sync(self) -> None:
        """Catch up with the peer with the most work (as last heard); return once it has
        nothing more, at once without peers, or after settings.sync_timeout_s."""
        await self._sync.sync()

    def cut(self, addresses: Iterable[Address]) -> None:
        """Cut this node off from the peers listening at `addresses` until heal(): their links
        close now and nothing more passes either way. On the network's loop only."""
        self._peering.cut(addresses)

    def heal(self, addresses: Iterable[Address] | None = None) -> None:
        """Undo cut() for `addresses` (default: all) and dial them again at once."""
        self._peering.heal(addresses)

    # -- composition -----------------------------------------------------------------------------

    def _route(self, link: Link, sender: bytes, body: Body) -> None:
        match body:
            case Hello():
                self._peering.on_hello(link, sender, body)
            case Bye():
                self._peering.on_bye(link, body)
            case Ping():
                self._peering.on_ping(link, body)
            case Pong():
                self._peering.on_pong(link, body)
            case Peers():
                self._peering.on_peers(body)
            case Inv():
                self._gossip.on_inv(link, body)
            case GetData():
                self._gossip.on_getdata(link, body)
            case Data():
                self._gossip.on_data(link, body)
            case Items():
                self._gossip.on_items(link, body)
            case GetBlocks():
                self._sync.on_getblocks(link, body)
            case Blocks():
                self._sync.on_blocks(link, body)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat(self) -> None:
        last = time.monotonic()
        while self._running:
            await asyncio.sleep(self.settings.heartbeat_s)
            now = time.monotonic()
            # A tick that comes late means the loop was busy (a long import): frames from
            # peers may be waiting unread, so nobody is timed out on this one.
            late = now - last > 2 * self.settings.heartbeat_s
            last = now
            try:
                self._tick(timeouts=not late)
            except Exception:
                log.exception("network heartbeat failed")

    def _tick(self, *, timeouts: bool = True) -> None:
        now = time.monotonic()
        self._peering.tick(now, timeouts=timeouts)
        self._sync.expire(now)
        self._gossip.retry(now)
