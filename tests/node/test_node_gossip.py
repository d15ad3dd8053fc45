"""A real PoUWNode facing a peer that sends it bad blocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from pouw.bench.network import ItemStore
from pouw.blockchain.block import encode_block
from pouw.crypto import KeyPair
from pouw.network.messages import ItemKind
from pouw.network.network import Network
from pouw.node import NodeConfig, PoUWNode
from pouw.roles import NodeRole


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_bad_blocks_are_rejected_counted_and_their_sender_banned(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = PoUWNode(
            "verifier",
            NodeRole.VERIFIER,
            config=NodeConfig(
                node_id="verifier", role=NodeRole.VERIFIER, port=0, data_dir=tmp_path / "v"
            ),
        )
        await node.start()
        assert node.network is not None
        mallory = Network(
            KeyPair.from_seed(b"mallory"),
            ItemStore(node.intake.chain_info()),
            host="127.0.0.1",
            port=0,
            bootstrap_peers=[("127.0.0.1", node.network.port)],
        )
        await mallory.start()
        try:
            await until(lambda: node.network is not None and node.network.peer_count() == 1)
            key = KeyPair.from_seed(b"mallory")
            for number in range(5):  # unsealed: no iteration message, no work
                block = node.chain.assemble_block(
                    key.public_key,
                    key.address,
                    [],
                    timestamp_ms=node.chain.tip.header.timestamp_ms + 1000 + number,
                )
                await mallory.publish(ItemKind.BLOCK, block.hash(), encode_block(block))
            registry = node.metrics.registry

            def rejected() -> float:
                return sum(
                    sample.value
                    for family in registry.collect()
                    if family.name == "pouw_blocks_rejected"
                    for sample in family.samples
                    if sample.name.endswith("_total")
                )

            await until(lambda: rejected() >= 4)
            assert node.network.peer_count() == 0  # banned after four rejections (25 each)
            assert node.chain.height == 0 and node.get_status()["stats"]["blocks_rejected"] >= 4
            await node.start_mining()  # and the node keeps working
            await until(lambda: node.chain.height >= 1)
        finally:
            await mallory.stop()
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=90))
