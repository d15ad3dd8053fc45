"""A flood: one real mining node receives 1,000 transactions a second for 60 s from a peer.

The peer runs in its own process (so that its pacing does not wait on the node, nor its memory
count as the node's) with a real `Network`: announce, getdata, packed items, the path every
relayed transaction takes. It sends pre-signed transfers from funded devnet accounts (many
senders, each a short nonce chain) with fees drawn from a wide range. The node runs with a
smaller mempool than its default so that the flood fills it and eviction happens.

Checked: the node's RSS stays bounded; the mempool never holds more than its bound and every
eviction takes its lowest fee, for a newcomer that pays more; every transaction the node
accepted and did not evict lands in a block by the end. The figures (what was sent, what the
node judged, accepted, refused and mined, memory over time) are printed: `pytest -s` shows
them. A sender whose transaction was evicted (or dropped by an overloaded import queue) has a
nonce gap from then on: its later transactions are refused "nonce_gap" (answered "known", not
held against the relay). POUW_FLOOD_SECONDS shortens the flood for a quick look.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from pouw.blockchain.block import Block
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.params import devnet_key, devnet_params
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import Transaction, Transfer, encode_transaction, sign_transaction
from pouw.errors import InvalidTransaction
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.network.network import Network

RATE_PER_S = 1_000
FLOOD_S = float(os.environ.get("POUW_FLOOD_SECONDS", "60"))
SENDERS = 12_000
"""Funded accounts the flood comes from: each sends a transaction every SENDERS/RATE seconds,
so an eviction (which drops the sender's later pending transactions too, and leaves a gap that
the sender's next ones cannot cross) costs one short chain, not a tenth of the flood."""
MEMPOOL_BOUND = 2_000
DRAIN_S = 120.0
"""After the flood: how long every accepted transaction may take to reach a block."""
RSS_GROWTH_MB = 200.0
"""The node's process may grow this much over the flood (mempool, caches, SQLite pages)."""
CHAIN_ID = "pouw-devnet-flood"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(FLOOD_S + DRAIN_S + 300))]


def sender_names() -> tuple[str, ...]:
    return tuple(f"flood-{i}" for i in range(SENDERS))


# -- the flooding peer (its own process) ----------------------------------------------------------


class Follower:
    """The flooding peer's handler: it serves its transactions, wants nothing else, and follows
    the node's tip from the blocks the node announces, so that neither side syncs from the
    other during the flood."""

    def __init__(self, info: ChainInfo) -> None:
        self.info = info
        self.items: dict[bytes, bytes] = {}
        self.blocks: set[bytes] = {info.tip_hash, info.genesis_hash}

    def chain_info(self) -> ChainInfo:
        return self.info

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool:
        if kind == ItemKind.BLOCK:
            return item_id in self.blocks
        return kind != ItemKind.TX or item_id in self.items

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        return self.items.get(item_id) if kind == ItemKind.TX else None

    def _follow(self, encoded: bytes) -> Verdict:
        header = msgspec.msgpack.decode(encoded, type=Block).header
        block_hash = header.hash()
        if block_hash in self.blocks:
            return Verdict.KNOWN
        if header.prev_hash != self.info.tip_hash:
            return Verdict.ORPHAN
        self.blocks.add(block_hash)
        self.info = ChainInfo(
            self.info.chain_id,
            self.info.genesis_hash,
            header.height,
            block_hash,
            self.info.total_work + header.difficulty,
        )
        return Verdict.ACCEPTED

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        return ItemResult(self._follow(payload) if kind == ItemKind.BLOCK else Verdict.KNOWN)

    def block_locator(self) -> list[bytes]:
        return [self.info.tip_hash, self.info.genesis_hash]

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return []

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        for encoded in blocks:
            if self._follow(encoded) == Verdict.ORPHAN:
                return ItemResult(Verdict.ORPHAN)
        return ItemResult(Verdict.ACCEPTED)


def presigned(count: int) -> list[tuple[bytes, bytes]]:
    """(txid, encoded) of `count` transfers, round-robin over the senders (each sender's nonces
    in order), fees drawn from a wide range so that eviction has a choice."""
    keys = [devnet_key(name) for name in sender_names()]
    recipient = devnet_key("sink").address
    rng = random.Random(6)
    flood = []
    for n in range(count):
        tx = sign_transaction(
            keys[n % SENDERS],
            Transfer(recipient=recipient, amount=1 + n),
            nonce=n // SENDERS,
            fee=rng.randrange(1, 100_000),
            chain_id=CHAIN_ID,
        )
        flood.append((tx.txid(), encode_transaction(tx)))
    return flood


def flood_peer(port: int, info: ChainInfo, total: int, seconds: float, pipe: Connection) -> None:
    """The child process: sign, connect, say ready, wait for go, flood at RATE_PER_S, report."""
    asyncio.run(_flood(port, info, total, seconds, pipe))


async def _flood(port: int, info: ChainInfo, total: int, seconds: float, pipe: Connection) -> None:
    started = time.perf_counter()
    flood = presigned(total)
    signing_s = time.perf_counter() - started
    handler = Follower(info)
    handler.items = dict(flood)
    network = Network(
        devnet_key("flooder"),
        handler,
        host="127.0.0.1",
        port=0,
        bootstrap_peers=[("127.0.0.1", port)],
    )
    await network.start()
    try:
        deadline = time.monotonic() + 30
        while network.peer_count() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pipe.send({"ready": network.peer_count() == 1, "signing_s": round(signing_s, 1)})
        while not pipe.poll():
            await asyncio.sleep(0.05)
        pipe.recv()
        t0 = time.monotonic()
        sent = 0
        while sent < total and time.monotonic() - t0 < seconds + 5:
            due = min(total, int((time.monotonic() - t0) * RATE_PER_S) + 1)
            for txid, encoded in flood[sent:due]:
                await network.publish(ItemKind.TX, txid, encoded)
            sent = max(sent, due)
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(5)  # answer the node's last getdata
        pipe.send({"sent": sent, "seconds": round(elapsed, 2), "connected": network.peer_count()})
    finally:
        await network.stop()


# -- the node under flood --------------------------------------------------------------------------


@dataclass
class Watch:
    """What the flood did to the node, recorded as it happened."""

    verdicts: dict[bytes, str] = field(default_factory=dict)
    evicted: set[bytes] = field(default_factory=set)
    evictions: int = 0
    eviction_errors: list[str] = field(default_factory=list)
    largest_mempool: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """The mempool's refusals by reason (the node answers most of them "known")."""


class WatchedMempool(Mempool):
    """The node's mempool, recording every eviction and checking that it took the lowest fee."""

    def __init__(self, max_transactions: int, watch: Watch) -> None:
        super().__init__(max_transactions)
        self.watch = watch
        self._gone: list[Transaction] | None = None

    def add(self, tx: Transaction, state: LedgerState, size: int | None = None) -> bytes:
        try:
            txid = super().add(tx, state, size)
        except InvalidTransaction as refused:
            self.watch.refused[refused.reason] += 1
            raise
        self.watch.largest_mempool = max(self.watch.largest_mempool, len(self))
        return txid

    def _make_room_for(self, fee: int) -> None:
        lowest = min(entry.tx.fee for entry in self._by_id.values())
        self._gone = []
        try:
            super()._make_room_for(fee)  # raises mempool_full when the newcomer pays too little
            gone = self._gone
        finally:
            self._gone = None
        self.watch.evictions += 1
        self.watch.evicted.update(tx.txid() for tx in gone)
        first = gone[0] if gone else None  # the one chosen; any others are its successors
        if first is None or first.fee != lowest or first.fee >= fee:
            self.watch.eviction_errors.append(
                f"evicted {first} with {lowest} the lowest fee, for a newcomer's {fee}"
            )

    def _remove_from(self, sender: str, nonce: int) -> None:
        if self._gone is not None:
            pending = self._by_sender.get(sender, {})
            self._gone.extend(pending[n].tx for n in sorted(pending) if n >= nonce)
        super()._remove_from(sender, nonce)


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


class Flood:
    """The node under flood, the flooding peer's process, and what was measured."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.params = devnet_params(
            ("node", *sender_names()), chain_id=CHAIN_ID, block_time_ms=1_000,
            initial_difficulty=300,
        )  # fmt: skip
        self.total = int(RATE_PER_S * FLOOD_S)
        self.watch = Watch()
        self.figures: dict[str, Any] = {"rate_per_s": RATE_PER_S, "flood_s": FLOOD_S}
        self.context = multiprocessing.get_context("spawn")
        self.ours, self.theirs = self.context.Pipe()
        self.rss: list[float] = []
        self.baseline_mb = 0.0
        self.process = psutil.Process()

    async def from_peer(self, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.ours.poll, timeout)
        assert ready, "the flooding peer did not answer"
        message: dict[str, Any] = self.ours.recv()
        return message

    def node(self) -> Any:
        from pouw.node import NodeConfig, PoUWNode
        from pouw.roles import NodeRole

        config = NodeConfig(node_id="node", role=NodeRole.MINER, port=0, data_dir=self.data_dir)
        node = PoUWNode("node", NodeRole.MINER, config=config, params=self.params)
        node.ledger.mempool = WatchedMempool(MEMPOOL_BOUND, self.watch)
        judge, verdicts = node.intake.on_item, self.watch.verdicts

        async def on_item(kind: ItemKind, item_id: bytes, payload: bytes, peer: str) -> Any:
            result = await judge(kind, item_id, payload, peer)
            if kind == ItemKind.TX:
                verdicts[item_id] = result.verdict.value + (
                    f":{result.reason}" * bool(result.reason)
                )
            return result

        node.intake.on_item = on_item  # type: ignore[method-assign]
        return node

    async def run(self) -> None:
        node = self.node()
        await node.start()
        peer = self.context.Process(
            target=flood_peer,
            args=(node.network.port, node.intake.chain_info(), self.total, FLOOD_S, self.theirs),
            daemon=True,
        )
        peer.start()
        try:
            await node.start_mining()
            hello = await self.from_peer(120)
            assert hello["ready"], "the flooding peer could not connect"
            self.figures["signing_s"] = hello["signing_s"]
            assert await until(lambda: node.chain.height >= 1, 60), "the node does not mine"
            await self.flood(node)
            await self.drain(node)
        finally:
            await node.stop()
            peer.join(10)
            if peer.is_alive():
                peer.kill()

    async def flood(self, node: Any) -> None:
        """Say go; sample memory, mempool and verdicts each second until the peer reports."""
        self.baseline_mb = self.process.memory_info().rss / 2**20
        self.height_before = node.chain.height
        self.ours.send("go")
        t0 = time.monotonic()
        sizes: list[tuple[float, int]] = []
        judged: list[tuple[float, int]] = []
        report = None
        while report is None:
            await asyncio.sleep(1.0)
            now = time.monotonic() - t0
            self.rss.append(self.process.memory_info().rss / 2**20)
            sizes.append((round(now), len(node.mempool)))
            judged.append((now, len(self.watch.verdicts)))
            if self.ours.poll():
                report = self.ours.recv()
            assert now < FLOOD_S + 60, "the flooding peer hangs"
        in_window = max((count for at, count in judged if at <= FLOOD_S), default=0)
        accepted = sum(1 for v in self.watch.verdicts.values() if v == "accepted")
        self.figures.update(
            sent=report["sent"],
            sent_per_s=round(report["sent"] / report["seconds"], 1),
            peer_still_connected=bool(report["connected"]),
            judged_per_s_in_flood=round(in_window / FLOOD_S, 1),
            accepted=accepted,
            accepted_per_s=round(accepted / FLOOD_S, 1),
            samples=len(sizes),
            mempool_at_s=sizes[::5],
        )
        self.flood_end = time.monotonic()

    async def drain(self, node: Any) -> None:
        mined = Mined(node)
        watch = self.watch

        def unmined() -> set[bytes]:
            accepted = {txid for txid, verdict in watch.verdicts.items() if verdict == "accepted"}
            return accepted - watch.evicted - mined.txids()

        self.drained = await until(lambda: not unmined(), DRAIN_S)
        self.missing = unmined()
        self.figures.update(
            drain_s=round(time.monotonic() - self.flood_end, 1),
            blocks=node.chain.height - self.height_before,
            mined=len(mined.txids()),
            rss_baseline_mb=round(self.baseline_mb, 1),
            rss_peak_growth_mb=round(max(self.rss) - self.baseline_mb, 1),
            rss_each_10s=[round(r) for r in self.rss[::10]],
            refused=dict(watch.refused),
            dropped_overloaded=node.metrics.registry.get_sample_value(
                "pouw_messages_dropped_total", {"reason": "overloaded"}
            ),
            evictions=watch.evictions,
            evicted=len(watch.evicted),
            largest_mempool=watch.largest_mempool,
        )


def test_a_node_flooded_with_transactions_stays_bounded_and_mines_what_it_took(
    tmp_path: Path,
) -> None:
    flood = Flood(tmp_path / "node")
    asyncio.run(flood.run())
    print("flood figures:", flood.figures)
    watch = flood.watch
    assert flood.drained, f"{len(flood.missing)} accepted transactions never reached a block"
    assert watch.largest_mempool <= MEMPOOL_BOUND
    assert watch.evictions > 0, "the flood never filled the mempool: nothing was checked"
    assert not watch.eviction_errors, watch.eviction_errors[:5]
    assert flood.figures["rss_peak_growth_mb"] < RSS_GROWTH_MB
    assert flood.figures["accepted"] > 0


class Mined:
    """Transaction ids in the node's main chain, read block by block as the chain grows."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.by_block: dict[bytes, set[bytes]] = {}

    def txids(self) -> set[bytes]:
        chain = self.node.chain
        found: set[bytes] = set()
        for height in range(1, chain.height + 1):
            block_hash = chain.hash_at(height)
            if block_hash not in self.by_block:
                block = chain.block(block_hash)
                assert block is not None
                self.by_block[block_hash] = {tx.txid() for tx in block.transactions[1:]}
            found |= self.by_block[block_hash]
        return found
