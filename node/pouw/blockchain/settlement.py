"""How a client's task ends, by rule on every node: settled by its drawn evaluators, or refunded
to its client at its deadline.

- Only an evaluator drawn for the task (its ticket still live) may send a TASK_RESULT, once per
  task: the ranking of final models, each by a drawn miner whose ticket is still live and
  carrying that miner's signature over the model, best accuracy first. The transaction carries
  no payouts: the ledger computes them.
- The task settles when a majority of its drawn evaluators sent the same ranking (evaluation on
  the withheld test set is deterministic on CPU, so honest evaluators agree). The escrow is
  split (`split_escrow`) among the ranked miners and the evaluators of that majority; an
  evaluator in the minority, or silent, is not paid.
- A task still open at its deadline (`height + task_deadline_blocks`) is refunded: when the block
  at the deadline height is applied, after its transactions, the escrow goes back to the client.

`LedgerState` applies what these functions decide through its tracked writes, so a reorg
reverts a settlement or a refund with the block that made it.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from pouw.blockchain.draw import TaskDraw
from pouw.blockchain.params import ChainParams
from pouw.blockchain.transactions import (
    Address,
    Payout,
    RankedModel,
    TaskResult,
    WithdrawFromTask,
    final_model_body,
)
from pouw.crypto import SignedKind, verify_as
from pouw.errors import InvalidTransaction, Reason
from pouw.spec import TaskSpec

TaskStatus = Literal["open", "completed", "refunded"]

EVALUATOR_PERCENT = 10
"""The evaluators' part of an escrow; the ranked miners share the rest. Only duties the ledger
checks are paid from it: supervisors keep the IT_RES journal off chain, and a verifier's
verdict on a block that every node re-executes proves nothing, so neither role is paid from
escrows (verifiers earn the reporter's share of the slashes they prove; docs/protocol.md 8.5)."""


class EvaluatorResult(msgspec.Struct, frozen=True, array_like=True):
    """One drawn evaluator's ranking of a task, as its TASK_RESULT sent it."""

    evaluator: Address
    ranking: tuple[RankedModel, ...]


class Withdrawal(msgspec.Struct, frozen=True, array_like=True):
    """A drawn miner left the task (WITHDRAW_FROM_TASK), and why."""

    miner: Address
    reason: str


class TaskRecord(msgspec.Struct, frozen=True, array_like=True):
    task_id: bytes
    client: str
    spec: TaskSpec
    escrow: int
    height: int
    status: TaskStatus = "open"
    result: TaskResult | None = None
    """The ranking that settled the task."""
    drawn: TaskDraw | None = None
    """Its workers, once block `height + draw_delay` is applied (`pouw.blockchain.draw`)."""
    deadline: int = 0
    """The last height at which a result can settle the task; then its escrow is refunded."""
    results: tuple[EvaluatorResult, ...] = ()
    """The drawn evaluators' results so far, in the order they were mined."""
    payouts: tuple[Payout, ...] = ()
    """What the settlement (or the refund) paid."""
    closed_at: int = 0
    """The height of the block that settled or refunded the task."""
    withdrawals: tuple[Withdrawal, ...] = ()
    """Drawn miners that left the task, in the order their withdrawals were mined."""

    def withdrawn(self) -> set[str]:
        return {entry.miner for entry in self.withdrawals}


def split_escrow(
    escrow: int, ranked_miners: Sequence[str], evaluators: Sequence[str]
) -> tuple[Payout, ...]:
    """The evaluators share EVALUATOR_PERCENT equally; the miners share the rest by rank
    (weights k, k-1, ..., 1 for k ranked miners). With no evaluator to pay, the miners take it
    all; rounding remainders go to the best miner."""
    if not ranked_miners:
        raise ValueError("a task closes with at least one ranked miner")
    amounts: dict[str, int] = {}

    def pay(address: str, amount: int) -> None:
        amounts[address] = amounts.get(address, 0) + amount

    miners_share = escrow
    if evaluators:
        each = escrow * EVALUATOR_PERCENT // 100 // len(evaluators)
        for address in evaluators:
            pay(address, each)
        miners_share -= each * len(evaluators)
    weights = list(range(len(ranked_miners), 0, -1))
    total_weight = sum(weights)
    paid = 0
    for address, weight in zip(ranked_miners, weights, strict=True):
        amount = miners_share * weight // total_weight
        pay(address, amount)
        paid += amount
    pay(ranked_miners[0], miners_share - paid)
    return tuple(Payout(address, amount) for address, amount in amounts.items() if amount > 0)


def task_deadline(params: ChainParams, height: int) -> int:
    return height + params.task_deadline_blocks


def evaluation_height(params: ChainParams, record: TaskRecord) -> int:
    """From this height on, an evaluator still waiting for a drawn miner's final model scores
    the ones it has, so that its result can be mined before the deadline."""
    earliest = record.height + params.draw_delay
    return max(earliest, record.deadline - params.settlement_blocks)


def check_task_result(
    record: TaskRecord | None,
    result: TaskResult,
    sender: str,
    live: Container[bytes],
    chain_id: str,
) -> None:
    """Raise unless `sender` may send `result` now; `live` holds the live tickets' ids; the
    ranked models' signatures are checked as final models on `chain_id`."""
    if record is None:
        raise InvalidTransaction(Reason.UNKNOWN_TASK, result.task_id.hex())
    task = result.task_id.hex()[:16]
    if record.status == "refunded" and record.closed_at >= record.deadline:
        raise InvalidTransaction(
            Reason.TASK_EXPIRED, f"task {task} passed its deadline {record.deadline}"
        )
    if record.status != "open":
        raise InvalidTransaction(Reason.TASK_CLOSED, f"task {task} is {record.status}")
    if record.drawn is None:
        raise InvalidTransaction(Reason.TASK_NOT_DRAWN, f"task {task} has no workers drawn yet")
    if not any(t.owner == sender and t.ticket_id in live for t in record.drawn.evaluators):
        raise InvalidTransaction(
            Reason.NOT_AN_EVALUATOR, f"{sender} holds no live evaluator ticket drawn for {task}"
        )
    if any(entry.evaluator == sender for entry in record.results):
        raise InvalidTransaction(
            Reason.RESULT_ALREADY_SENT, f"{sender} already sent its result for {task}"
        )
    staying = _StayingMiners(record, live)
    _check_ranking(record.task_id, staying, result.ranking, chain_id)


class _StayingMiners(dict[str, bytes]):
    """The public keys of a task's drawn miners that still hold their tickets and did not
    withdraw, by address."""

    def __init__(self, record: TaskRecord, live: Container[bytes]) -> None:
        assert record.drawn is not None
        withdrawn = record.withdrawn()
        super().__init__(
            (t.owner, t.public_key)
            for t in record.drawn.miners
            if t.ticket_id in live and t.owner not in withdrawn
        )


def _check_ranking(
    task_id: bytes, keys: Mapping[str, bytes], ranking: Sequence[RankedModel], chain_id: str
) -> None:
    ranked = [entry.miner for entry in ranking]
    outsiders = [miner for miner in ranked if miner not in keys]
    if outsiders:
        raise InvalidTransaction(
            Reason.NOT_DRAWN_MINER,
            f"{outsiders[0]} holds no live miner ticket drawn for the task, or withdrew",
        )
    if not ranking or len(set(ranked)) != len(ranked):
        raise InvalidTransaction(Reason.BAD_RANKING, "one entry per ranked miner, at least one")
    if list(ranking) != sorted(ranking, key=lambda entry: (-entry.accuracy, entry.miner)):
        raise InvalidTransaction(Reason.BAD_RANKING, "best accuracy first, ties by address")
    for entry in ranking:
        key = keys[entry.miner]
        body = final_model_body(task_id, key, entry.model_hash, entry.bytes_hash)
        if not verify_as(SignedKind.FINAL_MODEL, chain_id, key, entry.signature, body):
            raise InvalidTransaction(
                Reason.MODEL_NOT_SIGNED, f"{entry.miner} did not sign the model ranked for it"
            )


def record_result(record: TaskRecord, result: TaskResult, sender: str, height: int) -> TaskRecord:
    """The task with `sender`'s checked result added; settled, with its payouts, once a majority
    of its drawn evaluators agree."""
    assert record.drawn is not None, "check_task_result passed"
    results = (*record.results, EvaluatorResult(sender, result.ranking))
    agreeing = [entry.evaluator for entry in results if entry.ranking == result.ranking]
    if len(agreeing) <= len(record.drawn.evaluators) // 2:
        return msgspec.structs.replace(record, results=results)
    payouts = split_escrow(record.escrow, [entry.miner for entry in result.ranking], agreeing)
    return msgspec.structs.replace(
        record,
        status="completed",
        result=result,
        results=results,
        payouts=payouts,
        closed_at=height,
    )


def due_for_refund(tasks: Iterable[TaskRecord], height: int) -> list[TaskRecord]:
    """Client tasks still open once the block at their deadline height is applied."""
    return [t for t in tasks if t.status == "open" and t.client and t.deadline <= height]


def check_withdrawal(
    record: TaskRecord | None, withdrawal: WithdrawFromTask, sender: str, live: Container[bytes]
) -> None:
    """Raise unless `sender` is a drawn miner of the open task, holding its ticket, that has
    not withdrawn yet."""
    if record is None:
        raise InvalidTransaction(Reason.UNKNOWN_TASK, withdrawal.task_id.hex())
    task = withdrawal.task_id.hex()[:16]
    if record.status != "open":
        raise InvalidTransaction(Reason.TASK_CLOSED, f"task {task} is {record.status}")
    if record.drawn is None:
        raise InvalidTransaction(Reason.TASK_NOT_DRAWN, f"task {task} has no workers drawn yet")
    if sender in record.withdrawn():
        raise InvalidTransaction(Reason.ALREADY_WITHDRAWN, f"{sender} left task {task} already")
    if sender not in _StayingMiners(record, live):
        raise InvalidTransaction(
            Reason.NOT_DRAWN_MINER, f"{sender} holds no live miner ticket drawn for {task}"
        )


def record_withdrawal(
    record: TaskRecord,
    withdrawal: WithdrawFromTask,
    sender: str,
    live: Container[bytes],
    height: int,
) -> TaskRecord:
    """The task with `sender`'s checked withdrawal added; refunded when no drawn miner stays."""
    updated = msgspec.structs.replace(
        record, withdrawals=(*record.withdrawals, Withdrawal(sender, withdrawal.reason))
    )
    return updated if _StayingMiners(updated, live) else refunded(updated, height)


def refunded(record: TaskRecord, height: int) -> TaskRecord:
    refund = (Payout(record.client, record.escrow),) if record.escrow else ()
    return msgspec.structs.replace(record, status="refunded", payouts=refund, closed_at=height)
