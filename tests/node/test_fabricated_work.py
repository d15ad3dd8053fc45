"""An outsider fabricates work: IT_RES whose outputs were never computed, its loss varied until
the seal meets the difficulty (hashing, not training). A node that is not a verifier refuses
every such block by re-executing it, counts each under its reason and bans the sender."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import msgspec
from tests.node.test_node_gossip import until
from tests.support.nodes import hostile_peer, local_node

from pouw.blockchain.block import Block, encode_block, meets_difficulty, sign_block
from pouw.blockchain.iteration_message import NO_UPDATES_HASH, IterationMessage
from pouw.blockchain.params import bootstrap_task_id
from pouw.crypto import ZERO_HASH, KeyPair, sha256
from pouw.mining.budget import derive_nonce
from pouw.mining.segments import checkpoint_bytes, checkpoint_hash, initial_checkpoint
from pouw.network.messages import ItemKind
from pouw.node.node import PoUWNode


def fabricated(node: PoUWNode, key: KeyPair, salt: int) -> Block:
    """A block claiming iteration (0, 0) of the bootstrap task from the true initial model,
    with made-up outputs ground until its first nonce wins."""
    params = node.context.params
    task_id, spec = bootstrap_task_id(params), params.bootstrap_task
    assert task_id is not None and spec is not None
    start = initial_checkpoint(task_id, spec)
    template = node.chain.assemble_block(
        key.public_key, key.address, [], timestamp_ms=node.chain.tip.header.timestamp_ms + 1000
    )
    for attempt in itertools.count():
        message = IterationMessage(
            task_id=task_id, miner=key.public_key, ticket_id=ZERO_HASH, worker_index=0,
            workers=1, epoch=0, iteration=0, checkpoint_hash=checkpoint_hash(start),
            batch_hash=sha256(b"a batch"), loss=2.3 + salt + attempt * 1e-9, correct=10,
            samples=spec.batch_size, start_sample=b"\0" * 64, grad_sample=b"\1" * 64,
            applied_updates_hash=NO_UPDATES_HASH, previous_commitment=ZERO_HASH,
        )  # fmt: skip
        header = msgspec.structs.replace(
            template.header,
            iteration_hash=sha256(message.encode()),
            history_commitment=message.commitment(),
            precursor=message.precursor(),
            nonce=derive_nonce(message.precursor(), 0),
        )
        if meets_difficulty(header.seal_hash(), header.difficulty):
            block = msgspec.structs.replace(
                template,
                header=header,
                iteration_message=message.encode(),
                checkpoint=checkpoint_bytes(start),
            )
            return sign_block(block, key, params.chain_id)
    raise AssertionError("unreachable")


def test_fabricated_work_is_refused_by_every_node_and_costs_its_sender(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path / "peer")  # a PEER: no verifier role
        await node.start()
        assert node.network is not None
        key = KeyPair.from_seed(b"mallory")
        mallory = hostile_peer(node, key)
        await mallory.start()
        try:
            await until(lambda: node.network is not None and node.network.peer_count() == 1)
            for salt in range(5):
                block = fabricated(node, key, salt)
                await mallory.publish(ItemKind.BLOCK, block.hash(), encode_block(block))

            def rejected(reason: str) -> float:
                return sum(
                    sample.value
                    for family in node.metrics.registry.collect()
                    if family.name == "pouw_blocks_rejected"
                    for sample in family.samples
                    if sample.name.endswith("_total") and sample.labels.get("reason") == reason
                )

            await until(lambda: rejected("batch_mismatch") >= 4, timeout=60)
            # banned after four rejections (25 points each)
            await until(lambda: node.network is not None and node.network.peer_count() == 0)
            assert node.chain.height == 0
        finally:
            await mallory.stop()
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
