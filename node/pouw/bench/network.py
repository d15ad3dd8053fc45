"""`pouw bench network`: gossip propagation, chain sync and relay throughput on 127.0.0.1.

Real `Network` instances (ZeroMQ, CurveZMQ, signed envelopes) in one process:
- propagation_p95_ms: an item published by a random node reaching all of 10 nodes;
- sync_blocks_per_s: a fresh node importing a real 500-block chain (seal checks, no
  re-execution) from a peer, SQLite commits included;
- messages_per_s: small items one node relays from A to C.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from pouw.bench.mining import DEMO, MiningRig
from pouw.blockchain.block import decode_block
from pouw.blockchain.chain import AddStatus, Chain
from pouw.blockchain.errors import InvalidBlock, MalformedData
from pouw.blockchain.store import ChainStore
from pouw.crypto import KeyPair, sha256
from pouw.network.gossip import Network, NetworkSettings
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.node.sync import block_locator, blocks_after

Report = Callable[[str], None]
SYNC_BLOCKS = 500


class ItemStore:
    """A node's handler for the gossip benchmarks: items in a dict, arrival times noted."""

    def __init__(self, info: ChainInfo) -> None:
        self.info = info
        self.items: dict[bytes, bytes] = {}
        self.arrived: dict[bytes, float] = {}
        self.changed = asyncio.Event()

    def chain_info(self) -> ChainInfo:
        return self.info

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool:
        return item_id in self.items

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        return self.items.get(item_id)

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        if item_id in self.items:
            return ItemResult(Verdict.KNOWN)
        self.items[item_id] = payload
        self.arrived[item_id] = time.perf_counter()
        self.changed.set()
        return ItemResult(Verdict.ACCEPTED)

    def block_locator(self) -> list[bytes]:
        return [self.info.genesis_hash]

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return []

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        return ItemResult(Verdict.KNOWN)


class ChainHandler(ItemStore):
    """A handler backed by a real chain: serves and imports blocks."""

    def __init__(self, chain: Chain) -> None:
        super().__init__(self._info(chain))
        self.chain = chain

    @staticmethod
    def _info(chain: Chain) -> ChainInfo:
        return ChainInfo(
            chain.params.chain_id,
            chain.genesis_hash,
            chain.height,
            chain.tip.hash,
            chain.tip.total_work,
        )

    def chain_info(self) -> ChainInfo:
        return self._info(self.chain)

    def block_locator(self) -> list[bytes]:
        return block_locator(self.chain)

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return blocks_after(self.chain, locator, limit)

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        for encoded in blocks:
            try:
                update = self.chain.add_block(decode_block(encoded), encoded)
            except (InvalidBlock, MalformedData) as error:
                return ItemResult(Verdict.REJECTED, getattr(error, "reason", "malformed"))
            if update.status == AddStatus.ORPHAN:
                return ItemResult(Verdict.ORPHAN)
        self.changed.set()
        return ItemResult(Verdict.ACCEPTED)


def _info(chain_id: str = "pouw-bench") -> ChainInfo:
    genesis = sha256(chain_id.encode())
    return ChainInfo(chain_id, genesis, 0, genesis, 0)


async def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.001)


def _everyone_has(handlers: list[ItemStore], item_id: bytes) -> Callable[[], bool]:
    return lambda: all(item_id in handler.items for handler in handlers)


async def _mesh(count: int) -> tuple[list[Network], list[ItemStore]]:
    handlers = [ItemStore(_info()) for _ in range(count)]
    networks: list[Network] = []
    for index, handler in enumerate(handlers):
        peers = [("127.0.0.1", networks[0].port)] if networks else []
        if index > 1:
            peers.append(("127.0.0.1", networks[index - 1].port))
        network = Network(
            KeyPair.from_seed(b"bench-%d" % index),
            handler,
            host="127.0.0.1",
            port=0,
            bootstrap_peers=peers,
            max_peers=6,
        )
        await network.start()
        networks.append(network)
    await _wait(lambda: all(n.peer_count() >= 2 for n in networks), 30)
    return networks, handlers


async def _propagation(report: Report, items: int = 50) -> float:
    networks, handlers = await _mesh(10)
    try:
        latencies = []
        for number in range(items):
            payload = os.urandom(40_000)
            item_id = sha256(payload)
            source = number % len(networks)
            started = time.perf_counter()
            handlers[source].items[item_id] = payload
            handlers[source].arrived[item_id] = started
            await networks[source].publish(ItemKind.BLOCK, item_id, payload)
            await _wait(_everyone_has(handlers, item_id), 10)
            latencies.append(1000 * (max(h.arrived[item_id] for h in handlers) - started))
        report(
            f"propagation to 10 nodes: median {statistics.median(latencies):.1f} ms, "
            f"max {max(latencies):.1f} ms over {items} items of 40 KB"
        )
        return statistics.quantiles(latencies, n=20)[-1]
    finally:
        for network in networks:
            await network.stop()


async def _relay(report: Report, items: int = 3000) -> float:
    handlers = [ItemStore(_info()) for _ in range(3)]
    a = Network(KeyPair.from_seed(b"relay-a"), handlers[0], host="127.0.0.1", port=0)
    await a.start()
    b = Network(
        KeyPair.from_seed(b"relay-b"),
        handlers[1],
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", a.port)],
        settings=NetworkSettings(rate_per_s=1e6, burst=10**6),
    )
    await b.start()
    c = Network(
        KeyPair.from_seed(b"relay-c"),
        handlers[2],
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", b.port)],
        max_peers=1,
    )
    await c.start()
    try:
        await _wait(lambda: a.peer_count() == 1 and c.peer_count() == 1, 20)
        started = time.perf_counter()
        for number in range(items):
            payload = number.to_bytes(8, "big") * 32
            item_id = sha256(payload)
            handlers[0].items[item_id] = payload
            await a.publish(ItemKind.TX, item_id, payload)
            if number % 100 == 99:
                await asyncio.sleep(0)
        await _wait(lambda: len(handlers[2].items) == items, 60)
        rate = items / (time.perf_counter() - started)
        report(f"relay A -> B -> C: {items} items of 256 bytes at {rate:,.0f} items/s")
        return rate
    finally:
        for network in (c, b, a):
            await network.stop()


def _built_chain(workdir: Path, report: Report) -> MiningRig:
    spec = msgspec.structs.replace(DEMO, epochs=10_000)
    rig = MiningRig(spec, workdir / "source", difficulty=1, block_time_ms=1)
    stop = threading.Event()
    trainer = rig.trainer(spec)

    def enough(stats: object) -> None:
        if rig.chain.height >= SYNC_BLOCKS:
            stop.set()

    rig.miner().train(trainer, stop=stop, progress=enough)
    report(f"built a {rig.chain.height}-block chain by training (difficulty 1)")
    return rig


async def _sync(rig: MiningRig, workdir: Path, report: Report) -> float:
    source_handler = ChainHandler(rig.chain)
    source = Network(KeyPair.from_seed(b"sync-source"), source_handler, host="127.0.0.1", port=0)
    await source.start()
    fresh_chain = Chain(ChainStore(workdir / "fresh"), rig.params)
    fresh_handler = ChainHandler(fresh_chain)
    fresh = Network(
        KeyPair.from_seed(b"sync-fresh"),
        fresh_handler,
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", source.port)],
    )
    started = time.perf_counter()
    await fresh.start()
    try:
        target = rig.chain.height
        await _wait(lambda: fresh_chain.height >= target, 120)
        seconds = time.perf_counter() - started
        rate = target / seconds
        report(f"synced {target} blocks in {seconds:.2f} s: {rate:,.0f} blocks/s")
        return rate
    finally:
        await fresh.stop()
        await source.stop()
        fresh_chain.store.close()


def run(report: Report) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pouw-bench-network-") as tmp:
        workdir = Path(tmp)
        rig = _built_chain(workdir, report)
        propagation = asyncio.run(_propagation(report))
        relay = asyncio.run(_relay(report))
        sync = asyncio.run(_sync(rig, workdir, report))
        rig.chain.store.close()
    return {
        "bench": "network",
        "propagation_p95_ms": round(propagation, 2),
        "sync_blocks_per_s": round(sync, 1),
        "messages_per_s": round(relay, 1),
        "nodes": 10,
        "sync_blocks": SYNC_BLOCKS,
        "target_propagation_p95_ms": 200,
        "target_sync_blocks_per_s": 500,
    }
