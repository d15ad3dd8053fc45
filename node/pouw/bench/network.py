"""`pouw bench network`: gossip propagation, chain sync and relay throughput on 127.0.0.1.

Real `Network` instances (ZeroMQ with CurveZMQ, signed envelopes) in one process and loop:
- propagation_p95_ms: 10 nodes in a sparse random graph (each dials 2 earlier ones, peer
  exchange adds more); 50 items of 20-60 KB, each published by a random node; the time until
  the last of the 10 handlers has it; 95th percentile.
- sync_blocks_per_s: a fresh node joining a real 500-block chain (mined by training at
  difficulty 1), importing through a real Chain (SQLite, one commit per sync reply; seal rules off,
  nothing re-executed), end to end from start() to the last block stored. Its baseline,
  local_import_blocks_per_s, imports the same blocks into a fresh Chain in a plain loop,
  committing every sync_batch blocks;
  sync_ratio = sync / local import (1.0 = the network costs nothing).
- messages_per_s: 256-byte items that node B relays from A to C (receive, re-announce, serve
  getdata), counted when C has them all; median of 3 runs. A publishes bursts of 200 per loop
  turn. messages_per_s_one_at_a_time has A yield after every item. Either way invs, getdata
  and answers carry many items per signed frame once items queue up (non-block invs wait up
  to 5 ms to be batched), so the rate is not bounded by one signature per item.
"""

from __future__ import annotations

import asyncio
import os
import random
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
from pouw.blockchain.store import ChainStore
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidBlock, MalformedData
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.network.network import Network, NetworkSettings
from pouw.node.locator import block_locator, blocks_after

Report = Callable[[str], None]
NODES = 10
ITEMS = 50
SYNC_BLOCKS = 500
RELAY_ITEMS = 10_000
RELAY_ROUNDS = 3
HOST = "127.0.0.1"


class ItemStore:
    """A node's handler for the gossip benchmarks: items in a dict, arrival times noted."""

    def __init__(self, info: ChainInfo) -> None:
        self.info = info
        self.items: dict[bytes, bytes] = {}
        self.arrived: dict[bytes, float] = {}

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
        if sha256(payload) != item_id:
            return ItemResult(Verdict.REJECTED, "id_mismatch")
        self.items[item_id] = payload
        self.arrived[item_id] = time.perf_counter()
        return ItemResult(Verdict.ACCEPTED)

    def block_locator(self) -> list[bytes]:
        return [self.info.genesis_hash]

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return []

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        return ItemResult(Verdict.KNOWN)


class ChainHandler(ItemStore):
    """A handler backed by a real chain: serves its blocks and imports a peer's."""

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
        with self.chain.batch():
            for encoded in blocks:
                try:
                    update = self.chain.add_block(decode_block(encoded), encoded)
                except (InvalidBlock, MalformedData) as error:
                    return ItemResult(Verdict.REJECTED, getattr(error, "reason", "malformed"))
                if update.status == AddStatus.ORPHAN:
                    return ItemResult(Verdict.ORPHAN)
        return ItemResult(Verdict.ACCEPTED)


def _info(chain_id: str = "pouw-bench") -> ChainInfo:
    genesis = sha256(chain_id.encode())
    return ChainInfo(chain_id, genesis, 0, genesis, 0)


async def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: {what} not reached in {timeout:.0f} s")
        await asyncio.sleep(0.0005)


def _node(name: str, handler: ItemStore, peers: list[Network], **options: Any) -> Network:
    return Network(
        KeyPair.from_seed(b"bench-" + name.encode()),
        handler,
        host=HOST,
        port=0,
        bootstrap_peers=[(HOST, peer.port) for peer in peers],
        **options,
    )


def _connected(networks: list[Network]) -> bool:
    keys = {network.key.public_key.hex(): index for index, network in enumerate(networks)}
    reached, frontier = {0}, [0]
    while frontier:
        for peer in networks[frontier.pop()].peers():
            index = keys.get(peer.node_key)
            if index is not None and index not in reached:
                reached.add(index)
                frontier.append(index)
    return len(reached) == len(networks)


async def _mesh(count: int, rng: random.Random) -> tuple[list[Network], list[ItemStore]]:
    """A sparse random graph: each node dials up to two random earlier ones."""
    handlers = [ItemStore(_info()) for _ in range(count)]
    networks: list[Network] = []
    for index, handler in enumerate(handlers):
        peers = rng.sample(networks, min(2, len(networks)))
        network = _node(f"mesh-{index}", handler, peers, max_peers=8)
        await network.start()
        networks.append(network)
    await _wait(
        lambda: all(n.peer_count() >= 2 for n in networks) and _connected(networks),
        30,
        "a connected mesh",
    )
    return networks, handlers


async def _propagation(report: Report, rng: random.Random) -> dict[str, float]:
    networks, handlers = await _mesh(NODES, rng)
    degrees = sorted(network.peer_count() for network in networks)
    report(f"mesh of {NODES} nodes up, peers per node {degrees[0]}-{degrees[-1]}")
    try:
        latencies = []
        for _ in range(ITEMS):
            payload = os.urandom(rng.randint(20_000, 60_000))
            item_id = sha256(payload)
            source = rng.randrange(NODES)
            started = time.perf_counter()
            handlers[source].items[item_id] = payload
            handlers[source].arrived[item_id] = started
            await networks[source].publish(ItemKind.BLOCK, item_id, payload)
            await _wait(lambda i=item_id: all(i in h.items for h in handlers), 10, "delivery")  # type: ignore[misc]
            latencies.append(1000 * (max(h.arrived[item_id] for h in handlers) - started))
        p95 = statistics.quantiles(latencies, n=20)[-1]
        report(
            f"propagation to {NODES} nodes over {ITEMS} items of 20-60 KB: "
            f"median {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
            f"max {max(latencies):.1f} ms"
        )
        return {"p95": p95, "median": statistics.median(latencies)}
    finally:
        for network in networks:
            await network.stop()


async def _relay(report: Report, yield_every: int) -> float:
    handlers = [ItemStore(_info()) for _ in range(3)]
    a = _node("relay-a", handlers[0], [], max_peers=1)
    await a.start()
    b = _node("relay-b", handlers[1], [a], max_peers=2)
    await b.start()
    c = _node("relay-c", handlers[2], [b], max_peers=1)
    await c.start()
    try:
        await _wait(lambda: b.peer_count() == 2, 20, "the relay line")
        payloads = [number.to_bytes(8, "big") * 32 for number in range(RELAY_ITEMS)]
        started = time.perf_counter()
        for number, payload in enumerate(payloads):
            item_id = sha256(payload)
            handlers[0].items[item_id] = payload
            await a.publish(ItemKind.TX, item_id, payload)
            if number % yield_every == yield_every - 1:
                await asyncio.sleep(0)  # A's loop turns: its pending invs go out
        await _wait(lambda: len(handlers[2].items) == RELAY_ITEMS, 60, "relay")
        rate = RELAY_ITEMS / (time.perf_counter() - started)
        report(
            f"relay A -> B -> C: {RELAY_ITEMS} items of 256 bytes published "
            f"{yield_every} per loop turn: {rate:,.0f} items/s"
        )
        return rate
    finally:
        for network in (c, b, a):
            await network.stop()


def _built_chain(workdir: Path, report: Report) -> MiningRig:
    spec = msgspec.structs.replace(DEMO, epochs=10_000)
    rig = MiningRig(spec, workdir / "source", difficulty=1, block_time_ms=1)
    stop = threading.Event()
    started = time.perf_counter()

    def enough(stats: object) -> None:
        if rig.chain.height >= SYNC_BLOCKS:
            stop.set()

    rig.miner().train(rig.trainer(spec), stop=stop, progress=enough)
    report(
        f"mined a {rig.chain.height}-block chain by training (difficulty 1) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return rig


def _local_import(rig: MiningRig, workdir: Path, report: Report) -> float:
    encoded = [rig.chain.store.block_bytes(h) for h in rig.chain.main_hashes()[1:]]
    blocks = [data for data in encoded if data is not None]
    chain = Chain(ChainStore(workdir / "local"), rig.params)
    started = time.perf_counter()
    batch = NetworkSettings().sync_batch
    for start in range(0, len(blocks), batch):
        with chain.batch():
            for data in blocks[start : start + batch]:
                chain.add_block(decode_block(data), data)
    seconds = time.perf_counter() - started
    chain.store.close()
    rate = len(blocks) / seconds
    size = sum(len(data) for data in blocks) / len(blocks)
    report(
        f"baseline: {len(blocks)} blocks (avg {size / 1024:.1f} KB) imported locally "
        f"at {rate:,.0f} blocks/s"
    )
    return rate


async def _sync(rig: MiningRig, workdir: Path, report: Report) -> float:
    source = _node("sync-source", ChainHandler(rig.chain), [])
    await source.start()
    fresh_chain = Chain(ChainStore(workdir / "fresh"), rig.params)
    fresh = _node("sync-fresh", ChainHandler(fresh_chain), [source])
    target = rig.chain.height
    started = time.perf_counter()
    await fresh.start()
    try:
        await _wait(lambda: fresh_chain.height >= target, 120, "sync")
        seconds = time.perf_counter() - started
        rate = target / seconds
        report(f"synced {target} blocks over the network in {seconds:.2f} s: {rate:,.0f} blocks/s")
        return rate
    finally:
        await fresh.stop()
        await source.stop()
        fresh_chain.store.close()


def run(report: Report) -> dict[str, Any]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="pouw-bench-network-") as tmp:
        workdir = Path(tmp)
        rig = _built_chain(workdir, report)
        local = _local_import(rig, workdir, report)
        sync = asyncio.run(_sync(rig, workdir, report))
        rig.chain.store.close()
    propagation = asyncio.run(_propagation(report, rng))
    relay = statistics.median(
        asyncio.run(_relay(report, yield_every=200)) for _ in range(RELAY_ROUNDS)
    )
    relay_single = statistics.median(
        asyncio.run(_relay(report, yield_every=1)) for _ in range(RELAY_ROUNDS)
    )
    return {
        "bench": "network",
        "propagation_p95_ms": round(propagation["p95"], 2),
        "propagation_median_ms": round(propagation["median"], 2),
        "sync_blocks_per_s": round(sync, 1),
        "local_import_blocks_per_s": round(local, 1),
        "sync_ratio": round(sync / local, 3),
        "messages_per_s": round(relay, 1),
        "messages_per_s_one_at_a_time": round(relay_single, 1),
        "nodes": NODES,
        "items": ITEMS,
        "sync_blocks": SYNC_BLOCKS,
        "curve": True,
        "target_propagation_p95_ms": 200,
        "target_sync_blocks_per_s": 500,
        "default_settings": {
            "rate_per_s": NetworkSettings().rate_per_s,
            "sync_batch": NetworkSettings().sync_batch,
        },
    }
