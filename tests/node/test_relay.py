"""A transaction signed elsewhere (a faucet's transfer) reaches a node through its API and is
held to the ledger's rules like any other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pouw.blockchain.genesis import new_genesis
from pouw.blockchain.params import devnet_key
from pouw.blockchain.transactions import Payout, Transfer, coins, encode_transaction
from pouw.blockchain.transactions import sign_transaction as sign
from pouw.config import NodeConfig
from pouw.crypto import KeyPair
from pouw.errors import InvalidTransaction
from pouw.node.node import PoUWNode
from pouw.roles import NodeRole

FAUCET = KeyPair.from_seed(b"the namespace's faucet")
POD = KeyPair.from_seed(b"a pod's random key").address


def test_a_faucet_transfer_is_relayed_once_and_a_devnet_one_refused(tmp_path: Path) -> None:
    params = new_genesis("pouw-lab", [Payout(FAUCET.address, coins(1000))], 1_700_000_000_000)
    config = NodeConfig(node_id="peer-0", port=0, data_dir=tmp_path, chain_id="pouw-lab")

    async def scenario() -> None:
        node = PoUWNode("peer-0", NodeRole.PEER, config=config, params=params)
        await node.start()
        try:
            funding = sign(FAUCET, Transfer(POD, coins(110)), nonce=0, fee=1, chain_id="pouw-lab")
            encoded = encode_transaction(funding)
            assert node.relay_transaction(encoded) == funding.txid().hex()
            assert node.account(FAUCET.address)["next_nonce"] == 1
            with pytest.raises(InvalidTransaction) as again:
                node.relay_transaction(encoded)
            assert again.value.reason == "duplicate"
            public = sign(
                devnet_key("faucet"), Transfer(POD, 1), nonce=0, fee=1, chain_id="pouw-lab"
            )
            with pytest.raises(InvalidTransaction) as refused:
                node.relay_transaction(encode_transaction(public))
            assert refused.value.reason == "devnet_key"
            assert node.mempool.transactions() == [funding]
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
