"""Keys anyone can derive from a public name sign only on devnet chains: a ledger of any other
chain refuses them with `devnet_key`, even where its genesis funds them."""

from __future__ import annotations

import pytest

from pouw.blockchain.mempool import Mempool
from pouw.blockchain.params import ChainParams, devnet_key, devnet_params
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import Payout, Transaction, Transfer, sign_transaction
from pouw.crypto import KeyPair
from pouw.errors import InvalidTransaction

DEVNET_MINER = devnet_key("miner")  # in DEVNET_ACCOUNT_NAMES: its seed is public
OWNER = KeyPair.from_seed(b"a private seed nobody else knows")
RECIPIENT = KeyPair.from_seed(b"recipient").address
FUNDS = 1_000_000


def funding(chain_id: str) -> ChainParams:
    """A genesis that funds the devnet key and a private one alike."""
    allocations = (
        Payout(recipient=DEVNET_MINER.address, amount=FUNDS),
        Payout(recipient=OWNER.address, amount=FUNDS),
    )
    return ChainParams(chain_id=chain_id, allocations=allocations)


def transfer_from(key: KeyPair, chain_id: str) -> Transaction:
    payload = Transfer(recipient=RECIPIENT, amount=100)
    return sign_transaction(key, payload, nonce=0, fee=1, chain_id=chain_id)


def test_devnet_key_transfer_on_a_non_devnet_chain_is_refused_and_changes_nothing() -> None:
    state = LedgerState.genesis(funding("pouw-main"))
    before = state.snapshot()
    tx = transfer_from(DEVNET_MINER, "pouw-main")
    with pytest.raises(InvalidTransaction) as refused, state.tracking():
        state.apply_transaction(tx, tx.txid(), height=1)
    assert refused.value.reason == "devnet_key"
    assert state.snapshot() == before
    with pytest.raises(InvalidTransaction) as admission:
        Mempool().add(tx, state)
    assert admission.value.reason == "devnet_key"


def test_devnet_key_transfer_on_a_devnet_chain_is_accepted() -> None:
    for params in (funding("pouw-devnet"), devnet_params(("miner",))):
        state = LedgerState.genesis(params)
        tx = transfer_from(DEVNET_MINER, params.chain_id)
        Mempool().add(tx, state)
        with state.tracking():
            state.apply_transaction(tx, tx.txid(), height=1)
        assert state.balance(RECIPIENT) == 100


def test_a_private_key_on_a_non_devnet_chain_is_accepted() -> None:
    state = LedgerState.genesis(funding("pouw-main"))
    tx = transfer_from(OWNER, "pouw-main")
    Mempool().add(tx, state)
    with state.tracking():
        state.apply_transaction(tx, tx.txid(), height=1)
    assert state.balance(RECIPIENT) == 100
