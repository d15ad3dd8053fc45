"""The transition function: every rule rejects with its reason, and reverting is exact."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.evidence import equivocation
from tests.support.ledger import (
    ALICE,
    BOB,
    CAROL,
    EVALUATOR,
    VERIFIER,
    ledger_params,
    signed,
    transfer,
)

from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import (
    BuyTicket,
    EvidenceKind,
    PayForTask,
    SlashEvidence,
    Transaction,
    Transfer,
)
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidTransaction
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

DIGITS = TaskSpec(model=ModelSpec(layers=(64, 32, 10)), dataset=DatasetSpec(name="digits"))


@pytest.fixture
def state() -> LedgerState:
    return LedgerState.genesis(ledger_params())


def apply(state: LedgerState, *txs: Transaction) -> None:
    with state.tracking():
        for tx in txs:
            state.apply_transaction(tx, tx.txid(), height=1)


def reason_of(state: LedgerState, *txs: Transaction) -> str:
    with pytest.raises(InvalidTransaction) as caught:
        apply(state, *txs)
    return caught.value.reason


def test_transfer_moves_amount_and_fee(state: LedgerState) -> None:
    alice, bob = state.balance(ALICE.address), state.balance(BOB.address)
    apply(state, transfer(ALICE, BOB, 300, nonce=0, fee=9))
    assert state.balance(ALICE.address) == alice - 309
    assert state.balance(BOB.address) == bob + 300
    assert state.account(ALICE.address).nonce == 1


def test_bad_signature(state: LedgerState) -> None:
    tx = transfer(ALICE, BOB, 1, nonce=0)
    forged = msgspec.structs.replace(tx, payload=Transfer(recipient=CAROL.address, amount=1))
    assert reason_of(state, forged) == "bad_signature"


def test_signature_for_another_chain_is_bad(state: LedgerState) -> None:
    tx = signed(ALICE, Transfer(recipient=BOB.address, amount=1), 0, chain_id="other-chain")
    assert reason_of(state, tx) == "bad_signature"


def test_replay_and_nonce_gap(state: LedgerState) -> None:
    tx = transfer(ALICE, BOB, 1, nonce=0)
    apply(state, tx)
    assert reason_of(state, tx) == "replay"
    assert reason_of(state, transfer(ALICE, BOB, 1, nonce=5)) == "nonce_gap"


def test_overspend_counts_the_fee(state: LedgerState) -> None:
    balance = state.balance(ALICE.address)
    assert reason_of(state, transfer(ALICE, BOB, balance, nonce=0, fee=1)) == "overspend"
    apply(state, transfer(ALICE, BOB, balance - 1, nonce=0, fee=1))
    assert state.balance(ALICE.address) == 0


def test_unfunded_account_cannot_spend(state: LedgerState) -> None:
    stranger = KeyPair.from_seed(b"stranger")
    assert reason_of(state, transfer(stranger, BOB, 1, nonce=0, fee=0)) == "overspend"


def test_buy_ticket_locks_stake(state: LedgerState) -> None:
    amount = state.params.min_stake
    before = state.balance(ALICE.address)
    tx = signed(ALICE, BuyTicket(role=NodeRole.MINER, amount=amount, preferences={"gpu": "no"}), 0)
    apply(state, tx)
    ticket = state.tickets[tx.txid()]
    assert ticket.owner == ALICE.address and ticket.role is NodeRole.MINER
    assert state.account(ALICE.address).locked == amount
    assert state.balance(ALICE.address) == before - amount - tx.fee


def test_stake_below_minimum(state: LedgerState) -> None:
    tx = signed(ALICE, BuyTicket(role=NodeRole.MINER, amount=state.params.min_stake - 1), 0)
    assert reason_of(state, tx) == "stake_below_minimum"


def test_pay_for_task_escrows_the_reward(state: LedgerState) -> None:
    tx = signed(ALICE, PayForTask(spec=DIGITS, reward=5_000), 0)
    apply(state, tx)
    task = state.tasks[tx.txid()]
    assert task.escrow == 5_000 and task.status == "open" and task.client == ALICE.address


def test_pay_for_task_with_an_unknown_dataset(state: LedgerState) -> None:
    spec = msgspec.structs.replace(DIGITS, dataset=DatasetSpec(name="imagenet"))
    assert (
        reason_of(state, signed(ALICE, PayForTask(spec=spec, reward=1), 0)) == "invalid_task_spec"
    )


def test_pay_for_task_whose_model_cannot_consume_its_dataset(state: LedgerState) -> None:
    spec = msgspec.structs.replace(
        DIGITS, model=ModelSpec(layers=(64, 10)), dataset=DatasetSpec(name="iris")
    )
    with pytest.raises(InvalidTransaction) as caught:
        apply(state, signed(ALICE, PayForTask(spec=spec, reward=1), 0))
    assert caught.value.reason == "invalid_task_spec"
    assert "model.layers[0]=64 but dataset 'iris' has 4 features" in str(caught.value)


# TASK_RESULT rules, settlement and refunds: tests/blockchain/test_settlement.py


def slash(reporter: KeyPair, ticket_id: bytes, offender: KeyPair, nonce: int) -> Transaction:
    """Two IT_RES of `offender` that conflict (`tests/blockchain/test_slashing.py` has every
    kind of evidence)."""
    proof = equivocation(offender, ticket_id, sha256(b"task"), EvidenceKind.ITERATION)
    return signed(reporter, SlashEvidence(ticket_id, proof), nonce)


def test_slashing_confiscates_stake(state: LedgerState) -> None:
    stake = 10 * state.params.min_stake
    ticket_tx = signed(BOB, BuyTicket(role=NodeRole.MINER, amount=stake), 0)
    verifier_ticket = signed(
        VERIFIER, BuyTicket(role=NodeRole.VERIFIER, amount=state.params.min_stake), 0
    )
    apply(state, ticket_tx, verifier_ticket)
    reporter_before = state.balance(VERIFIER.address)
    tx = slash(VERIFIER, ticket_tx.txid(), BOB, 1)
    apply(state, tx)
    assert ticket_tx.txid() not in state.tickets
    assert state.account(BOB.address).locked == 0
    share = stake * state.params.slash_reporter_share_percent // 100
    assert state.balance(VERIFIER.address) == reporter_before - tx.fee + share


def test_slashing_rules(state: LedgerState) -> None:
    ticket_tx = signed(BOB, BuyTicket(role=NodeRole.MINER, amount=state.params.min_stake), 0)
    verifier_ticket = signed(
        VERIFIER, BuyTicket(role=NodeRole.VERIFIER, amount=state.params.min_stake), 0
    )
    apply(state, ticket_tx, verifier_ticket)
    assert reason_of(state, slash(VERIFIER, sha256(b"no such"), BOB, 1)) == "unknown_ticket"
    assert reason_of(state, slash(CAROL, ticket_tx.txid(), BOB, 0)) == "reporter_without_ticket"
    assert reason_of(state, slash(VERIFIER, ticket_tx.txid(), CAROL, 1)) == "bad_evidence_signature"


KEYS = [ALICE, BOB, CAROL, EVALUATOR]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 3), st.integers(0, 2_000_000_000), st.integers(0, 3)
        ),
        max_size=12,
    )
)
def test_reverting_restores_the_state_exactly(moves: list[tuple[int, int, int, int]]) -> None:
    state = LedgerState.genesis(ledger_params())
    before = state.snapshot()
    nonces = dict.fromkeys(range(4), 0)
    with state.tracking() as changes:
        for sender, recipient, amount, kind in moves:
            key = KEYS[sender]
            if kind == 0:
                payload: object = BuyTicket(
                    role=NodeRole.MINER, amount=max(amount, state.params.min_stake)
                )
            elif kind == 1:
                payload = PayForTask(spec=DIGITS, reward=amount + 1)
            else:
                payload = Transfer(recipient=KEYS[recipient].address, amount=amount + 1)
            tx = signed(key, payload, nonces[sender])  # type: ignore[arg-type]
            try:
                state.apply_transaction(tx, tx.txid(), height=1)
                nonces[sender] += 1
            except InvalidTransaction:
                pass
        state.revert(changes)
    assert state.snapshot() == before
