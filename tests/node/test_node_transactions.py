"""A real PoUWNode admits only what a block could hold: a transaction breaking a payload rule is
refused on the API path with its reason, and dropped on the gossip path, counted against the
relay unless an honest relay, a block ahead or behind, could have sent it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support.nodes import local_node

from pouw.blockchain.params import devnet_key
from pouw.blockchain.transactions import (
    RankedModel,
    TaskResult,
    Transfer,
    encode_transaction,
    sign_transaction,
)
from pouw.crypto import sha256
from pouw.errors import InvalidTransaction
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.roles import NodeRole

SENDER = devnet_key("peer")  # funded by the devnet genesis


def test_a_transaction_no_block_could_hold_is_refused_and_not_relayed(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path / "client")
        await node.start()
        try:
            with pytest.raises(InvalidTransaction) as refused:
                node.stake(0.5, NodeRole.MINER)  # the devnet minimum is 1 coin
            assert refused.value.reason == "stake_below_minimum"
            chain_id = node.params.chain_id

            async def gossip(payload: Transfer | TaskResult) -> ItemResult:
                tx = sign_transaction(SENDER, payload, nonce=0, fee=10, chain_id=chain_id)
                return await node.intake.on_item(
                    ItemKind.TX, tx.txid(), encode_transaction(tx), "relay"
                )

            nothing = await gossip(Transfer(recipient=node.address, amount=0))
            assert (nothing.verdict, nothing.reason) == (Verdict.REJECTED, "zero_amount")
            unknown = TaskResult(
                sha256(b"a task this node has not seen"),
                (RankedModel(node.address, sha256(b"model"), 0.9, sha256(b"bytes"), bytes(64)),),
            )
            assert (await gossip(unknown)).verdict == Verdict.KNOWN  # dropped, not held against
            assert len(node.mempool) == 0
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
