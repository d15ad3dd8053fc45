"""Settlement by rule, on a real chain: only the task's drawn evaluators send results, rankings
name only its drawn miners, a majority of the drawn evaluators settles it at the published
split, and a task nobody settles is refunded to its client at its deadline, once, reverted
with its block in a reorg."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from tests.support.ledger import make_block, mine
from tests.support.settlement import (
    BEST_M0,
    BEST_M1,
    CHAIN_ID,
    CLIENT,
    DEADLINE_BLOCKS,
    E0,
    E1,
    E2,
    E3,
    ESCROW,
    M0,
    M1,
    OUTSIDER,
    S0,
    V0,
    Ledger,
    ranked,
    ranking,
)

from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.settlement import split_escrow
from pouw.blockchain.transactions import (
    COIN,
    BuyTicket,
    TaskResult,
    WithdrawFromTask,
    final_model_body,
)
from pouw.crypto import SignedKind, sha256
from pouw.errors import InvalidBlock
from pouw.node.items import FinalModel, sign_final_model
from pouw.node.roles.evaluator import task_result
from pouw.roles import NodeRole


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path)


def test_only_an_evaluator_drawn_for_the_task_may_send_its_result(ledger: Ledger) -> None:
    (unseated,) = {E0, E1, E2, E3} - set(ledger.evaluators())
    result = TaskResult(ledger.task_id, BEST_M0)
    assert ledger.refusal(unseated, result) == "not_an_evaluator"
    mine(ledger.chain, [ledger.tx(OUTSIDER, BuyTicket(NodeRole.EVALUATOR, COIN))])
    assert ledger.refusal(OUTSIDER, result) == "not_an_evaluator"  # bought after the draw
    assert ledger.refusal(M0, result) == "not_an_evaluator"


def test_a_ranking_pays_only_the_drawn_miners(ledger: Ledger) -> None:
    evaluator = ledger.evaluators()[0]
    theft = TaskResult(ledger.task_id, ranking((OUTSIDER, 1.0), (M0, 0.9)))
    assert ledger.refusal(evaluator, theft) == "not_drawn_miner"
    twice = TaskResult(ledger.task_id, ranking((M0, 0.9), (M0, 0.9)))
    assert ledger.refusal(evaluator, twice) == "bad_ranking"
    worst_first = TaskResult(ledger.task_id, ranking((M0, 0.1), (M1, 0.9)))
    assert ledger.refusal(evaluator, worst_first) == "bad_ranking"
    assert ledger.refusal(evaluator, TaskResult(ledger.task_id, ())) == "bad_ranking"


def test_a_ranked_model_must_be_one_its_miner_signed(ledger: Ledger) -> None:
    evaluator = ledger.evaluators()[0]
    best, second = BEST_M0
    made_up = msgspec.structs.replace(best, model_hash=sha256(b"a model m0 never handed in"))
    assert ledger.refusal(evaluator, TaskResult(ledger.task_id, (made_up, second))) == (
        "model_not_signed"
    )
    signed_by_other = msgspec.structs.replace(best, signature=second.signature)
    forged = TaskResult(ledger.task_id, (signed_by_other, second))
    assert ledger.refusal(evaluator, forged) == "model_not_signed"
    other_task = ranked(sha256(b"another task"), M0, 0.9)
    replayed = TaskResult(ledger.task_id, (other_task, second))
    assert ledger.refusal(evaluator, replayed) == "model_not_signed"


@pytest.mark.parametrize("kind", [k for k in SignedKind if k != SignedKind.FINAL_MODEL])
def test_a_ranked_models_signature_counts_only_as_a_final_model_of_this_chain(
    ledger: Ledger, kind: SignedKind
) -> None:
    evaluator = ledger.evaluators()[0]
    best, second = BEST_M0
    body = final_model_body(ledger.task_id, M0.public_key, best.model_hash, best.bytes_hash)
    as_other_kind = msgspec.structs.replace(best, signature=M0.sign_as(kind, CHAIN_ID, body))
    result = TaskResult(ledger.task_id, (as_other_kind, second))
    assert ledger.refusal(evaluator, result) == "model_not_signed"
    other_chain = ranked(ledger.task_id, M0, best.accuracy, chain_id="pouw-elsewhere")
    result = TaskResult(ledger.task_id, (other_chain, second))
    assert ledger.refusal(evaluator, result) == "model_not_signed"


def test_a_ranking_of_final_models_as_their_miners_signed_them_is_accepted(
    ledger: Ledger,
) -> None:
    """The ledger checks a ranked model against the very signature the miner's FinalModel item
    carries (`sign_final_model`: a `final_model` on this chain over a body with its bytes)."""
    models = [
        sign_final_model(
            miner,
            CHAIN_ID,
            FinalModel(ledger.task_id, miner.public_key, sha256(data), data, iterations=10),
        )
        for miner, data in ((M0, b"m0's model"), (M1, b"m1's model"))
    ]
    result = task_result(ledger.record, list(zip(models, (0.9, 0.8), strict=True)))
    evaluator = ledger.evaluators()[0]
    ledger.chain.state.check_payload(result, evaluator.address)
    mine(ledger.chain, [ledger.tx(evaluator, result)])
    assert [entry.evaluator for entry in ledger.record.results] == [evaluator.address]


def test_a_majority_of_the_drawn_evaluators_settles_at_the_published_split(
    ledger: Ledger,
) -> None:
    first, second, third = ledger.evaluators()
    mine(ledger.chain, [ledger.tx(first, TaskResult(ledger.task_id, BEST_M0))])
    assert ledger.record.status == "open", "one of three drawn evaluators is no majority"
    before = {key.address: ledger.balance(key) for key in (M0, M1, V0, S0, first, second, third)}
    assert S0.address in {t.owner for t in ledger.drawn.supervisors}
    fee = 10
    mine(ledger.chain, [ledger.tx(second, TaskResult(ledger.task_id, BEST_M0))])
    record = ledger.record
    expected = split_escrow(ESCROW, [M0.address, M1.address], [first.address, second.address])
    assert record.status == "completed" and record.payouts == expected
    assert sum(p.amount for p in record.payouts) == ESCROW
    paid = {p.recipient: p.amount for p in expected}
    for key in (M0, M1, first):
        assert ledger.balance(key) == before[key.address] + paid[key.address]
    assert ledger.balance(second) == before[second.address] + paid[second.address] - fee
    assert ledger.balance(third) == before[third.address], "silent: not paid"
    assert ledger.balance(S0) == before[S0.address], "a supervisor's duty is off chain: not paid"
    assert V0.address in {t.owner for t in ledger.drawn.verifiers}
    assert ledger.balance(V0) == before[V0.address], "a verdict proves nothing: not paid"
    assert ledger.refusal(third, TaskResult(ledger.task_id, BEST_M0)) == "task_closed"


def test_evaluators_that_disagree_settle_nothing_and_none_may_change_its_result(
    ledger: Ledger,
) -> None:
    first, second, third = ledger.evaluators()
    mine(
        ledger.chain,
        [
            ledger.tx(first, TaskResult(ledger.task_id, BEST_M0)),
            ledger.tx(second, TaskResult(ledger.task_id, BEST_M1)),
        ],
    )
    assert ledger.record.status == "open" and len(ledger.record.results) == 2
    again = TaskResult(ledger.task_id, BEST_M1)
    assert ledger.refusal(first, again) == "result_already_sent"
    mine(ledger.chain, [ledger.tx(third, TaskResult(ledger.task_id, BEST_M1))])
    assert ledger.record.status == "completed" and ledger.record.result == again
    minority = {p.recipient for p in ledger.record.payouts}
    assert first.address not in minority and {second.address, third.address} <= minority


def test_a_task_nobody_settles_is_refunded_once_at_its_deadline(ledger: Ledger) -> None:
    deadline = ledger.record.deadline
    assert deadline == 2 + DEADLINE_BLOCKS
    before = ledger.balance(CLIENT)
    while ledger.chain.height < deadline - 1:
        mine(ledger.chain)
    assert ledger.record.status == "open" and ledger.balance(CLIENT) == before
    mine(ledger.chain)
    assert ledger.record.status == "refunded" and ledger.balance(CLIENT) == before + ESCROW
    for _ in range(3):
        mine(ledger.chain)
    assert ledger.balance(CLIENT) == before + ESCROW, "refunded exactly once"
    late = TaskResult(ledger.task_id, BEST_M0)
    assert ledger.refusal(ledger.evaluators()[0], late) == "task_expired"
    with pytest.raises(InvalidBlock) as refused:
        mine(ledger.chain, [ledger.tx(ledger.evaluators()[0], late)])
    assert refused.value.reason == "task_expired"


def test_a_reorg_across_the_deadline_reverts_the_refund(ledger: Ledger) -> None:
    deadline = ledger.record.deadline
    before = ledger.balance(CLIENT)
    while ledger.chain.height < deadline - 1:
        mine(ledger.chain)
    fork = ledger.chain.tip.hash
    mine(ledger.chain)
    assert ledger.record.status == "refunded"
    first, second, _ = ledger.evaluators()
    results = [ledger.tx(key, TaskResult(ledger.task_id, BEST_M0)) for key in (first, second)]
    side = make_block(ledger.chain, results, parent=fork, spacing_ms=900)
    ledger.chain.add_block(side)  # the deadline block again, now with a majority's results
    ledger.chain.add_block(make_block(ledger.chain, parent=side.hash()))
    assert ledger.chain.is_main(side.hash())
    assert ledger.record.status == "completed" and ledger.balance(CLIENT) == before


def test_the_bootstrap_task_cannot_be_closed(ledger: Ledger) -> None:
    bootstrap = bootstrap_task_id(ledger.chain.params)
    assert bootstrap is not None
    closing = TaskResult(bootstrap, BEST_M0)
    for evaluator in ledger.evaluators():
        assert ledger.refusal(evaluator, closing) == "task_not_drawn"


def test_a_drawn_miner_that_cannot_train_withdraws_and_the_last_to_leave_refunds_the_client(
    ledger: Ledger,
) -> None:
    leave = WithdrawFromTask(ledger.task_id, "training failed: shapes")
    assert ledger.refusal(OUTSIDER, leave) == "not_drawn_miner"
    assert ledger.refusal(ledger.evaluators()[0], leave) == "not_drawn_miner"
    before = ledger.balance(CLIENT)
    mine(ledger.chain, [ledger.tx(M0, leave)])
    record = ledger.record
    assert record.status == "open", "m1 still trains it"
    assert [(w.miner, w.reason) for w in record.withdrawals] == [(M0.address, leave.reason)]
    assert ledger.refusal(M0, leave) == "already_withdrawn"
    evaluator = ledger.evaluators()[0]
    assert ledger.refusal(evaluator, TaskResult(ledger.task_id, BEST_M0)) == "not_drawn_miner"
    mine(ledger.chain, [ledger.tx(M1, WithdrawFromTask(ledger.task_id, "dataset refused: x"))])
    record = ledger.record
    assert record.status == "refunded" and record.closed_at == ledger.chain.height
    assert record.closed_at < record.deadline, "refunded at once, not at the deadline"
    assert ledger.balance(CLIENT) == before + ESCROW
    assert ledger.refusal(evaluator, TaskResult(ledger.task_id, BEST_M0)) == "task_closed"
    assert ledger.refusal(M1, leave) == "task_closed"
    while ledger.chain.height < record.deadline + 1:
        mine(ledger.chain)
    assert ledger.balance(CLIENT) == before + ESCROW, "refunded exactly once"


def test_after_a_withdrawal_the_miners_that_stay_are_ranked_and_paid(ledger: Ledger) -> None:
    """A withdrawal takes one miner out of the ranking; the others' result still settles."""
    mine(ledger.chain, [ledger.tx(M1, WithdrawFromTask(ledger.task_id, "training diverged"))])
    only_m0 = ranking((M0, 0.9))
    first, second, _ = ledger.evaluators()
    mine(
        ledger.chain,
        [ledger.tx(key, TaskResult(ledger.task_id, only_m0)) for key in (first, second)],
    )
    assert ledger.record.status == "completed"
    assert {p.recipient for p in ledger.record.payouts} == {
        M0.address,
        first.address,
        second.address,
    }
