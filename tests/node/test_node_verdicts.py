"""A real PoUWNode facing a peer that gossips a verdict signed by a key with no ticket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.node.test_node_gossip import until
from tests.support.nodes import hostile_peer, local_node

from pouw.crypto import KeyPair
from pouw.network.messages import ItemKind
from pouw.node.items import BlockVerdict, encode_item, sign_verdict


def test_a_ticketless_verdict_is_rejected_scored_counted_and_not_shown(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path / "node", "node")
        await node.start()
        assert node.network is not None
        mallory_key = KeyPair.from_seed(b"mallory")
        mallory = hostile_peer(node, mallory_key)
        await mallory.start()
        try:
            await until(lambda: node.network is not None and node.network.peer_count() == 1)
            genesis = node.chain.block_at(0)
            assert genesis is not None
            verdict = sign_verdict(
                mallory_key,
                node.context.params.chain_id,
                BlockVerdict(genesis.hash(), mallory_key.public_key, True),
            )
            await mallory.publish(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict))

            def dropped() -> float:
                return sum(
                    sample.value
                    for family in node.metrics.registry.collect()
                    if family.name == "pouw_messages_dropped"
                    for sample in family.samples
                    if sample.name.endswith("_total")
                    and sample.labels.get("reason") == "not_a_verifier"
                )

            await until(lambda: dropped() == 1)
            (peer,) = node.network.peers()
            assert peer.ban_score > 0
            summary = node.block_summary(0)
            assert summary is not None
            assert (summary["attestations"], summary["verified"]) == ([], None)
        finally:
            await mallory.stop()
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=90))
