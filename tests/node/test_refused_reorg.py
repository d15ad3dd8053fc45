"""A branch that would reorganise a node past `max_reorg_depth` is refused with a reason: the
block is kept as a side branch and counted, the sender (an honest relay of a heavier branch)
is not blamed, and no exception escapes the item handler or the sync import. A branch that
outweighs the node's by `deep_reorg_work_percent` since the fork is taken however deep."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.ledger import ledger_params, make_block, mine, open_chain
from tests.support.nodes import local_node

from pouw.blockchain.block import Block, encode_block
from pouw.blockchain.chain import Chain
from pouw.blockchain.params import ChainParams
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.node import PoUWNode


def _params(work_percent: int) -> ChainParams:
    return ledger_params(max_reorg_depth=2, deep_reorg_work_percent=work_percent)


OUT_OF_REACH = 1_000
"""A work factor (%) the forks below never reach: the refusal is what is tested."""


def _fork(data_dir: Path, length: int, work_percent: int = OUT_OF_REACH) -> list[Block]:
    """`length` blocks from genesis on a chain of the same parameters."""
    other = open_chain(data_dir, _params(work_percent))
    blocks = []
    for _ in range(length):
        block = make_block(other, spacing_ms=1_000)
        other.add_block(block)
        blocks.append(block)
    return blocks


async def _started_node(
    tmp_path: Path, work_percent: int = OUT_OF_REACH
) -> tuple[PoUWNode, Chain, Chain]:
    node = local_node(tmp_path / "node")
    await node.start()
    own = node.ledger.chain
    chain = open_chain(tmp_path / "chain", _params(work_percent))
    node.ledger._chain = chain  # a seal-free chain with a reorg limit of 2
    node.intake.block_checks = []  # whose blocks carry no iteration to re-execute
    for _ in range(3):
        mine(chain)
    return node, chain, own


def test_a_gossiped_branch_past_the_reorg_limit_is_known_not_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        node, chain, own = await _started_node(tmp_path)
        try:
            tip = chain.tip.hash
            results: list[ItemResult] = []
            fork = _fork(tmp_path / "fork", 4)
            for block in fork:
                results.append(
                    await node.intake.on_item(
                        ItemKind.BLOCK, block.hash(), encode_block(block), "relay"
                    )
                )
            refused = [(r.verdict, r.reason) for r in results if r.verdict != Verdict.ACCEPTED]
            assert refused, "the heavier branch would reorganise 3 blocks past a limit of 2"
            assert set(refused) == {(Verdict.KNOWN, "reorg_too_deep")}
            assert chain.tip.hash == tip
            assert all(chain.contains(block.hash()) for block in fork)  # kept as a side branch
            assert node.context.counters.blocks_rejected == len(refused)
        finally:
            chain.store.close()
            node.ledger._chain = own
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_a_synced_branch_past_the_reorg_limit_is_known_not_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        node, chain, own = await _started_node(tmp_path)
        try:
            tip = chain.tip.hash
            fork = [encode_block(block) for block in _fork(tmp_path / "fork", 4)]
            result = await node.intake.on_sync_blocks(fork, "relay")
            assert (result.verdict, result.reason) == (Verdict.KNOWN, "reorg_too_deep")
            assert chain.tip.hash == tip
            assert node.context.counters.blocks_rejected == 1
        finally:
            chain.store.close()
            node.ledger._chain = own
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_a_synced_branch_with_twice_the_work_since_the_fork_is_taken_past_the_limit(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        node, chain, own = await _started_node(tmp_path, work_percent=200)
        try:
            fork = _fork(tmp_path / "fork", 4, work_percent=200)
            encoded = [encode_block(block) for block in fork]
            result = await node.intake.on_sync_blocks(encoded, "relay")
            assert result.verdict == Verdict.ACCEPTED
            assert chain.tip.hash == fork[-1].hash(), "the node rejoined the heavier branch"
            assert node.context.counters.blocks_rejected == 0
        finally:
            chain.store.close()
            node.ledger._chain = own
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
