from __future__ import annotations

import pytest
from tests.support.ledger import ALICE, BOB, CAROL, EVALUATOR, ledger_params, transfer

from pouw.blockchain.errors import InvalidTransaction
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.state import LedgerState


@pytest.fixture
def state() -> LedgerState:
    return LedgerState.genesis(ledger_params())


def reason(pool: Mempool, state: LedgerState, tx: object) -> str:
    with pytest.raises(InvalidTransaction) as caught:
        pool.add(tx, state)  # type: ignore[arg-type]
    return caught.value.reason


def test_select_orders_by_fee_and_keeps_nonce_order(state: LedgerState) -> None:
    pool = Mempool()
    low_then_high = [
        transfer(ALICE, BOB, 1, nonce=0, fee=1),
        transfer(ALICE, BOB, 1, nonce=1, fee=100),
    ]
    middle = transfer(CAROL, BOB, 1, nonce=0, fee=50)
    for tx in [*low_then_high, middle]:
        pool.add(tx, state)
    chosen = pool.select(state, max_bytes=1 << 20, height=1)
    assert chosen == [middle, *low_then_high]
    assert state.account(ALICE.address).nonce == 0, "selection leaves the state untouched"


def test_select_respects_the_byte_budget(state: LedgerState) -> None:
    pool = Mempool()
    for n in range(10):
        pool.add(transfer(ALICE, BOB, 1, nonce=n), state)
    chosen = pool.select(state, max_bytes=450, height=1)
    assert 0 < len(chosen) < 10
    assert [tx.nonce for tx in chosen] == list(range(len(chosen)))


def test_admission_rules(state: LedgerState) -> None:
    pool = Mempool()
    tx = transfer(ALICE, BOB, 1, nonce=0, fee=5)
    pool.add(tx, state)
    assert reason(pool, state, tx) == "duplicate"
    assert reason(pool, state, transfer(ALICE, CAROL, 1, nonce=0, fee=5)) == "duplicate_nonce"
    assert reason(pool, state, transfer(ALICE, BOB, 1, nonce=3)) == "nonce_gap"
    balance = state.balance(BOB.address)
    assert reason(pool, state, transfer(BOB, ALICE, balance, nonce=0, fee=1)) == "overspend"


def test_higher_fee_replaces_same_nonce(state: LedgerState) -> None:
    pool = Mempool()
    pool.add(transfer(ALICE, BOB, 1, nonce=0, fee=5), state)
    better = transfer(ALICE, CAROL, 1, nonce=0, fee=6)
    pool.add(better, state)
    assert pool.transactions() == [better]


def test_full_pool_evicts_lowest_fee_and_refuses_cheaper(state: LedgerState) -> None:
    pool = Mempool(max_transactions=3)
    pool.add(transfer(ALICE, BOB, 1, nonce=0, fee=10), state)
    pool.add(transfer(BOB, ALICE, 1, nonce=0, fee=3), state)
    pool.add(transfer(CAROL, ALICE, 1, nonce=0, fee=20), state)
    assert reason(pool, state, transfer(EVALUATOR, ALICE, 1, nonce=0, fee=2)) == "mempool_full"
    pool.add(transfer(EVALUATOR, ALICE, 1, nonce=0, fee=4), state)
    assert len(pool) == 3
    assert sorted(tx.fee for tx in pool.transactions()) == [4, 10, 20]


def test_confirmed_and_stale_transactions_leave_the_pool(state: LedgerState) -> None:
    pool = Mempool()
    first, second = transfer(ALICE, BOB, 1, nonce=0), transfer(ALICE, BOB, 1, nonce=1)
    pool.add(first, state)
    pool.add(second, state)
    with state.tracking():
        state.apply_transaction(first, first.txid(), height=1)
    pool.remove_confirmed([], state)
    assert pool.transactions() == [second]
