"""An in-memory NetworkHandler for the network tests, and helpers to run Network instances.

FakeNode keeps gossiped items in a dict and a block tree in memory: main chain = the highest
branch (every block has difficulty 1, so total work = height + 1). Items are judged by simple
rules: the id must be the sha256 of the payload, payloads starting with b"bad" are rejected
("bad_item"), payloads starting with b"boom" make the handler raise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from pouw.blockchain.block import Block, BlockHeader, decode_block, encode_block
from pouw.crypto import ZERO_HASH, KeyPair, sha256
from pouw.errors import MalformedData
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.messages import (
    Body,
    ChainInfo,
    Hello,
    ItemKind,
    ItemResult,
    Verdict,
    answer_challenge,
    open_frame,
    seal,
)
from pouw.network.network import Network, NetworkSettings
from pouw.network.transport import default_network_key, network_curve_keypair

T = TypeVar("T")
CHAIN = "pouw-test"
HOST = "127.0.0.1"
FAST = NetworkSettings(
    heartbeat_s=0.2, peer_timeout_s=3.0, request_timeout_s=1.0, exchange_s=1.0, max_backoff_s=1.0
)


def make_block(parent: Block | None, salt: int = 0, padding: int = 0) -> Block:
    height = 0 if parent is None else parent.height + 1
    header = BlockHeader(
        version=1,
        height=height,
        prev_hash=ZERO_HASH if parent is None else parent.hash(),
        merkle_root=ZERO_HASH,
        timestamp_ms=height,
        difficulty=1,
        nonce=salt,
        miner=b"",
        iteration_hash=ZERO_HASH,
        history_commitment=ZERO_HASH,
        precursor=ZERO_HASH,
    )
    return Block(header, (), iteration_message=bytes(padding))


GENESIS = make_block(None)


def extend(chain: list[Block], count: int, salt: int = 0, padding: int = 0) -> list[Block]:
    """`chain` plus `count` new blocks on its last one."""
    blocks = list(chain)
    for _ in range(count):
        blocks.append(make_block(blocks[-1], salt, padding))
    return blocks


def make_chain(height: int, salt: int = 0, padding: int = 0) -> list[Block]:
    return extend([GENESIS], height, salt, padding)


class FakeNode:
    def __init__(self, blocks: list[Block] | None = None, genesis: Block = GENESIS) -> None:
        self.genesis = genesis
        self.items: dict[tuple[ItemKind, bytes], bytes] = {}
        self.received: Counter[bytes] = Counter()
        self.sync_batches = 0
        self._blocks: dict[bytes, Block] = {genesis.hash(): genesis}
        self.main: list[bytes] = [genesis.hash()]
        for block in (blocks or [genesis])[1:]:
            self.add(block)

    # -- the fake chain --------------------------------------------------------------------------

    def add(self, block: Block) -> Verdict:
        block_hash = block.hash()
        if block_hash in self._blocks:
            return Verdict.KNOWN
        parent = self._blocks.get(block.header.prev_hash)
        if parent is None or parent.height + 1 != block.height:
            return Verdict.ORPHAN
        self._blocks[block_hash] = block
        if block.height > self.height:  # heavier: walk back to the fork point
            branch = [block_hash]
            cursor = block
            while self.hash_at(cursor.height - 1) != cursor.header.prev_hash:
                cursor = self._blocks[cursor.header.prev_hash]
                branch.append(cursor.hash())
            del self.main[cursor.height :]
            self.main.extend(reversed(branch))
        return Verdict.ACCEPTED

    def hash_at(self, height: int) -> bytes | None:
        return self.main[height] if 0 <= height < len(self.main) else None

    @property
    def height(self) -> int:
        return len(self.main) - 1

    @property
    def tip(self) -> bytes:
        return self.main[-1]

    def mine(self, count: int, salt: int = 0, padding: int = 0) -> list[Block]:
        """Extend our main chain directly (as a miner would), no gossip."""
        new = extend([self._blocks[self.tip]], count, salt, padding)[1:]
        for block in new:
            self.add(block)
        return new

    # -- NetworkHandler ----------------------------------------------------------------------------

    def chain_info(self) -> ChainInfo:
        return ChainInfo(CHAIN, self.genesis.hash(), self.height, self.tip, self.height + 1)

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool:
        if kind == ItemKind.BLOCK:
            return item_id in self._blocks
        return (kind, item_id) in self.items

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        if kind == ItemKind.BLOCK:
            block = self._blocks.get(item_id)
            return None if block is None else encode_block(block)
        return self.items.get((kind, item_id))

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        self.received[item_id] += 1
        if kind == ItemKind.BLOCK:
            try:
                block = decode_block(payload)
            except MalformedData:
                return ItemResult(Verdict.REJECTED, "malformed")
            if block.hash() != item_id:
                return ItemResult(Verdict.REJECTED, "id_mismatch")
            return ItemResult(self.add(block))
        if sha256(payload) != item_id:
            return ItemResult(Verdict.REJECTED, "id_mismatch")
        if payload.startswith(b"boom"):
            raise RuntimeError("the handler has a bug")
        if payload.startswith(b"bad"):
            return ItemResult(Verdict.REJECTED, "bad_item")
        if (kind, item_id) in self.items:
            return ItemResult(Verdict.KNOWN)
        self.items[(kind, item_id)] = payload
        return ItemResult(Verdict.ACCEPTED)

    def block_locator(self) -> list[bytes]:
        locator, step, index = [], 1, self.height
        while index > 0:
            locator.append(self.main[index])
            if len(locator) >= 10:
                step *= 2
            index -= step
        locator.append(self.main[0])
        return locator

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        start = 0
        for block_hash in locator:
            block = self._blocks.get(block_hash)
            if block is not None and self.hash_at(block.height) == block_hash:
                start = block.height
                break
        end = min(self.height, start + limit)
        return [encode_block(self._blocks[self.main[h]]) for h in range(start + 1, end + 1)]

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        self.sync_batches += 1
        for encoded in blocks:
            try:
                block = decode_block(encoded)
            except MalformedData:
                return ItemResult(Verdict.REJECTED, "malformed")
            if self.add(block) == Verdict.ORPHAN:
                return ItemResult(Verdict.ORPHAN)
        return ItemResult(Verdict.ACCEPTED)


def item(payload: bytes) -> tuple[bytes, bytes]:
    return sha256(payload), payload


# -- running networks ------------------------------------------------------------------------------


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 45.0) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Cluster:
    """Networks started in one test, all stopped at its end."""

    def __init__(self) -> None:
        self.networks: list[Network] = []

    async def node(
        self,
        name: str,
        peers: list[Network] | None = None,
        handler: FakeNode | None = None,
        settings: NetworkSettings = FAST,
        **options: Any,
    ) -> tuple[Network, FakeNode, NodeMetrics]:
        handler = handler or FakeNode()
        metrics = NodeMetrics()
        network = Network(
            KeyPair.from_seed(name.encode()),
            handler,
            host=options.pop("host", HOST),
            port=options.pop("port", 0),
            bootstrap_peers=[(HOST, peer.port) for peer in peers or []],
            metrics=metrics,
            settings=settings,
            **options,
        )
        await network.start()
        self.networks.append(network)
        return network, handler, metrics

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for network in reversed(self.networks):
            await network.stop()


def dropped(metrics: NodeMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("pouw_messages_dropped_total", {"reason": reason})
    return value or 0.0


def banned(metrics: NodeMetrics) -> float:
    return metrics.registry.get_sample_value("pouw_peers_banned_total") or 0.0


def received(metrics: NodeMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("pouw_messages_received_total", {"type": kind})
    return value or 0.0


def tuned(**changes: Any) -> NetworkSettings:
    """FAST settings with some changed."""
    return dataclasses.replace(FAST, **changes)


class RawPeer:
    """A hand-driven DEALER speaking to a node: for garbage, floods and silence."""

    def __init__(
        self, network: Network, name: str = "mallory", *, secure: bool = True, reads: bool = True
    ) -> None:
        """`reads=False`: a peer that never reads what it is sent (its ZeroMQ and kernel
        buffers take as little as they can)."""
        self.key = KeyPair.from_seed(name.encode())
        self.socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if not reads:
            self.socket.setsockopt(zmq.RCVHWM, 1)
            self.socket.setsockopt(zmq.RCVBUF, 4096)
        if secure:
            public, secret = zmq.curve_keypair()
            self.socket.curve_serverkey = network_curve_keypair(default_network_key(CHAIN))[0]
            self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
        self.socket.connect(f"tcp://{HOST}:{network.port}")

    async def send_raw(self, frame: bytes) -> None:
        await self.socket.send(frame)

    async def send(self, body: Body, timestamp_ms: int | None = None) -> None:
        now = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        await self.socket.send(seal(self.key, CHAIN, body, now))

    async def next_body(self, limit: int = 64 << 20) -> Body:
        """The next frame's body, whatever it carries."""
        return open_frame(await self.socket.recv(), CHAIN, limit)[1]

    async def hello(self, info: ChainInfo | None = None, wait_s: float = 1.0) -> None:
        """The handshake: our hello with a fresh challenge, then, once the node's hello came
        back (within `wait_s`), our hello answering its challenge."""
        info = info or FakeNode().chain_info()
        challenge = os.urandom(32)

        def hello(answer: bytes = b"") -> Hello:
            return Hello(
                info.chain_id, info.genesis_hash, info.height, info.tip_hash, 0, HOST, 1,
                challenge, answer,
            )  # fmt: skip

        await self.send(hello())
        reply = await self.receive(Hello, wait_s)
        if reply is not None:
            node, theirs = reply
            await self.send(hello(answer_challenge(self.key, CHAIN, theirs.challenge, node)))

    async def receive(self, kind: type[T], wait_s: float) -> tuple[bytes, T] | None:
        """The next frame carrying a `kind` (others are skipped) and its sender, if one
        arrives within `wait_s`."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if not await self.socket.poll(int(left * 1000), zmq.POLLIN):
                return None
            envelope, body = open_frame(await self.socket.recv(), CHAIN, 1 << 26)
            if isinstance(body, kind):
                return envelope.sender, body
        return None

    def close(self) -> None:
        self.socket.close(linger=0)


async def crash(network: Network) -> None:
    """Stop `network` the way kill -9 would: no goodbyes, sockets gone."""
    network._running = False
    for task in [*network._tasks, *network._wire.readers()]:
        task.cancel()
    await asyncio.sleep(0)
    network._wire.close(linger_ms=0)
