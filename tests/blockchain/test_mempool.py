from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
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
from tests.support.settlement import ranked

from pouw.blockchain.draw import draw_task
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import (
    BuyTicket,
    EvidenceKind,
    PayForTask,
    Payload,
    SlashEvidence,
    TaskResult,
    Transaction,
    Transfer,
    encode_transaction,
)
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidTransaction
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

DIGITS = TaskSpec(model=ModelSpec(layers=(64, 32, 10)), dataset=DatasetSpec(name="digits"))
ESCROW = 1_000
MIN_STAKE = ledger_params().min_stake


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


# -- the payload rules a block applies, at admission -------------------------------------------


def apply(state: LedgerState, *txs: Transaction) -> None:
    with state.tracking():
        for tx in txs:
            state.apply_transaction(tx, tx.txid(), height=1)


def result(task_id: bytes) -> TaskResult:
    return TaskResult(task_id, (ranked(task_id, BOB, 0.9),))


def evidence(ticket_id: bytes, offender: KeyPair) -> SlashEvidence:
    proof = equivocation(offender, ticket_id, sha256(b"task"), EvidenceKind.ITERATION)
    return SlashEvidence(ticket_id, proof)


@pytest.fixture
def chain_state(state: LedgerState) -> tuple[LedgerState, bytes, bytes]:
    """An open task (ALICE's), an evaluator, a verifier and BOB's miner ticket, on chain; the
    task drawn from those tickets."""
    task = signed(ALICE, PayForTask(spec=DIGITS, reward=ESCROW), 0)
    miner_ticket = signed(BOB, BuyTicket(role=NodeRole.MINER, amount=MIN_STAKE), 0)
    apply(
        state,
        task,
        miner_ticket,
        signed(EVALUATOR, BuyTicket(role=NodeRole.EVALUATOR, amount=MIN_STAKE), 0),
        signed(VERIFIER, BuyTicket(role=NodeRole.VERIFIER, amount=MIN_STAKE), 0),
    )
    draw(state, task.txid())
    return state, task.txid(), miner_ticket.txid()


def draw(state: LedgerState, task_id: bytes) -> None:
    """Seat the task's workers from the tickets on chain, as the block after it would."""
    record = state.tasks[task_id]
    drawn = draw_task(list(state.tickets.values()), task_id, 1, 1, sha256(b"block"), 2)
    state.tasks[task_id] = msgspec.structs.replace(record, drawn=drawn)


Refused = Callable[[bytes, bytes], tuple[KeyPair, Payload]]
"""(task id, ticket id) on chain -> sender, payload."""
REFUSED_PAYLOADS: dict[str, tuple[str, Refused]] = {
    "transfer of nothing": (
        "zero_amount",
        lambda task, ticket: (CAROL, Transfer(BOB.address, 0)),
    ),
    "task paying nothing": ("zero_amount", lambda task, ticket: (CAROL, PayForTask(DIGITS, 0))),
    "task on no dataset": (
        "invalid_task_spec",
        lambda task, ticket: (
            CAROL,
            PayForTask(msgspec.structs.replace(DIGITS, dataset=DatasetSpec(name="nope")), 5),
        ),
    ),
    "stake below minimum": (
        "stake_below_minimum",
        lambda task, ticket: (CAROL, BuyTicket(NodeRole.MINER, MIN_STAKE - 1)),
    ),
    "result of no task": (
        "unknown_task",
        lambda task, ticket: (EVALUATOR, result(sha256(b"?"))),
    ),
    "result from a non-evaluator": (
        "not_an_evaluator",
        lambda task, ticket: (CAROL, result(task)),
    ),
    "result ranking a miner not drawn": (
        "not_drawn_miner",
        lambda task, ticket: (EVALUATOR, TaskResult(task, (ranked(task, CAROL, 1.0),))),
    ),
    "slash of no ticket": (
        "unknown_ticket",
        lambda task, ticket: (VERIFIER, evidence(sha256(b"?"), BOB)),
    ),
    "slash from an account holding no ticket": (
        "reporter_without_ticket",
        lambda task, ticket: (CAROL, evidence(ticket, BOB)),
    ),
    "slash with forged evidence": (
        "bad_evidence_signature",
        lambda task, ticket: (VERIFIER, evidence(ticket, CAROL)),
    ),
}


@pytest.mark.parametrize("case", REFUSED_PAYLOADS)
def test_admission_refuses_what_no_block_could_hold(
    chain_state: tuple[LedgerState, bytes, bytes], case: str
) -> None:
    state, task_id, ticket_id = chain_state
    expected, build = REFUSED_PAYLOADS[case]
    sender, payload = build(task_id, ticket_id)
    tx = signed(sender, payload, state.account(sender.address).nonce)
    pool, before = Mempool(), state.snapshot()
    assert reason(pool, state, tx) == expected
    assert len(pool) == 0 and state.snapshot() == before


def test_a_ticket_bought_after_the_draw_makes_no_evaluator_and_one_result_closes_the_task(
    chain_state: tuple[LedgerState, bytes, bytes],
) -> None:
    state, task_id, _ = chain_state
    pool, before = Mempool(), state.snapshot()
    ticket = signed(CAROL, BuyTicket(role=NodeRole.EVALUATOR, amount=MIN_STAKE), 0)
    pool.add(ticket, state)
    assert reason(pool, state, signed(CAROL, result(task_id), 1)) == "not_an_evaluator"
    first = signed(EVALUATOR, result(task_id), 1)
    pool.add(first, state)
    assert state.snapshot() == before, "the trial left the state as it was"
    assert reason(pool, state, signed(EVALUATOR, result(task_id), 2)) == "task_closed"
    assert pool.select(state, max_bytes=1 << 20, height=2) == [ticket, first]


def test_a_ticket_slashed_by_a_pending_transaction_cannot_be_slashed_again(
    chain_state: tuple[LedgerState, bytes, bytes],
) -> None:
    state, _, ticket_id = chain_state
    pool = Mempool()
    pool.add(signed(VERIFIER, evidence(ticket_id, BOB), 1), state)
    assert reason(pool, state, signed(VERIFIER, evidence(ticket_id, BOB), 2)) == "unknown_ticket"


def test_a_pending_transaction_the_tip_made_stale_does_not_refuse_its_successors(
    chain_state: tuple[LedgerState, bytes, bytes],
) -> None:
    state, task_id, _ = chain_state
    second_task = signed(ALICE, PayForTask(spec=DIGITS, reward=ESCROW), 1)
    apply(state, second_task)
    draw(state, second_task.txid())
    pool = Mempool()
    pool.add(signed(EVALUATOR, result(task_id), 1), state)
    closed = msgspec.structs.replace(state.tasks[task_id], status="completed")
    state.tasks[task_id] = closed  # the tip closed the task first
    pool.add(signed(EVALUATOR, result(second_task.txid()), 2), state)
    assert len(pool) == 2  # the stale one waits for a replacement, as a stale transfer does


def test_a_sender_has_a_bounded_number_of_pending_transactions(state: LedgerState) -> None:
    pool = Mempool(max_per_sender=3)
    for nonce in range(3):
        pool.add(transfer(ALICE, BOB, 1, nonce=nonce, fee=5), state)
    assert reason(pool, state, transfer(ALICE, BOB, 1, nonce=3)) == "too_many_pending"
    pool.add(transfer(ALICE, CAROL, 1, nonce=2, fee=6), state)  # a replacement adds none
    pool.add(transfer(BOB, ALICE, 1, nonce=0), state)  # other senders are not held up
    assert len(pool) == 4


def _large(sender: KeyPair, nonce: int, fee: int) -> Transaction:
    """A ticket purchase whose preferences carry 8 KB: a large transaction."""
    preferences = {f"{n:02d}": "x" * 250 for n in range(32)}
    payload = BuyTicket(role=NodeRole.MINER, amount=MIN_STAKE, preferences=preferences)
    return signed(sender, payload, nonce, fee)


def test_the_pool_holds_at_most_its_bytes_per_sender_and_in_total(state: LedgerState) -> None:
    """Large transactions: a sender past its bytes is refused (too_many_pending), a pool past
    its bytes evicts the lowest fee for a better-paying newcomer, and refuses a cheaper one."""
    one = len(encode_transaction(_large(ALICE, 0, 10)))
    pool = Mempool(max_bytes=3 * one + one // 2, max_bytes_per_sender=2 * one + one // 2)
    pool.add(_large(ALICE, 0, 10), state)
    pool.add(_large(ALICE, 1, 10), state)
    assert reason(pool, state, _large(ALICE, 2, 10)) == "too_many_pending"
    pool.add(_large(BOB, 0, 5), state)
    assert reason(pool, state, _large(CAROL, 0, 4)) == "mempool_full"
    pool.add(_large(CAROL, 0, 20), state)
    assert sorted(tx.fee for tx in pool.transactions()) == [10, 10, 20]
    assert pool.bytes == sum(len(encode_transaction(tx)) for tx in pool.transactions())
    assert pool.bytes <= pool.max_bytes


def test_a_full_pool_evicts_nothing_for_a_newcomer_it_then_refuses(state: LedgerState) -> None:
    """Room is checked before anything goes: a newcomer that would need a second, better-paid
    eviction evicts nothing; one that would evict its sender's own earlier transaction (and sit
    behind a gap, never mined) is refused, and what was accepted stays."""
    one = len(encode_transaction(_large(ALICE, 0, 10)))
    pool = Mempool(max_bytes=2 * one + one // 2)
    pool.add(_large(ALICE, 0, 1), state)
    pool.add(_large(BOB, 0, 30), state)
    two_slots = signed(CAROL, BuyTicket(NodeRole.MINER, MIN_STAKE, _big_preferences(2)), 0, 20)
    assert reason(pool, state, two_slots) == "mempool_full"
    assert sorted(tx.fee for tx in pool.transactions()) == [1, 30]
    assert reason(pool, state, _large(ALICE, 1, 40)) == "mempool_full"
    assert sorted(tx.fee for tx in pool.transactions()) == [1, 30]


def _big_preferences(times: int) -> dict[str, str]:
    return {f"{n:02d}": "x" * 250 * times for n in range(32)}
