"""`pouw node`'s start: off devnet a node's key is random and unfunded, so it waits for coins
before it stakes instead of failing its start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pouw.api.runner import stake_when_funded
from pouw.blockchain.chain import AddStatus, ChainUpdate
from pouw.blockchain.genesis import new_genesis
from pouw.blockchain.state import Account
from pouw.blockchain.transactions import BuyTicket, Payout, coins
from pouw.config import NodeConfig
from pouw.crypto import KeyPair
from pouw.node.node import PoUWNode
from pouw.roles import NodeRole

SOMEONE_ELSE = KeyPair.from_seed(b"the genesis funds only this key").address


def private_node(tmp_path: Path) -> PoUWNode:
    params = new_genesis("pouw-test", [Payout(SOMEONE_ELSE, coins(1000))], 1_700_000_000_000)
    config = NodeConfig(
        node_id="miner-0", role=NodeRole.MINER, port=0, data_dir=tmp_path, chain_id="pouw-test"
    )
    return PoUWNode("miner-0", NodeRole.MINER, config=config, params=params)


def test_an_unfunded_node_stakes_once_funded_and_not_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pouw.api.runner")

    async def scenario() -> None:
        node = private_node(tmp_path)
        await node.start()
        try:
            stop = asyncio.Event()
            staking = asyncio.create_task(stake_when_funded(node, 10, stop))
            while "cannot stake" not in caplog.text:  # the first try was refused (overspend)
                await asyncio.sleep(0)  # a yield to the task, under the scenario's deadline
            assert not staking.done() and len(node.mempool) == 0
            assert node.address in caplog.text

            state = node.chain.state  # the funding a faucet transfer's block would bring
            state.accounts[node.address] = Account(balance=coins(100))
            tip = node.chain.tip.hash
            node.context.events.chain_changed.emit(ChainUpdate(AddStatus.EXTENDED, tip))
            assert await asyncio.wait_for(staking, timeout=10) is True
            (tx,) = node.mempool.transactions()
            assert isinstance(tx.payload, BuyTicket) and tx.payload.amount == coins(10)
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_a_stop_ends_the_wait_for_funds(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = private_node(tmp_path)
        await node.start()
        try:
            stop = asyncio.Event()
            staking = asyncio.create_task(stake_when_funded(node, 10, stop))
            stop.set()
            assert await asyncio.wait_for(staking, timeout=10) is False
            assert len(node.mempool) == 0
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
