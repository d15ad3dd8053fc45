"""The evaluator role against fakes: when it evaluates, whom it ranks, what it pays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from tests.node.fakes import IRIS, PARAMS, FakeLedger, assignment, context, key, task

from pouw.blockchain.transactions import TaskResult, sign_transaction
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidTransaction, Reason
from pouw.ml.models import build_model, model_hash, model_to_bytes
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel
from pouw.node.roles.evaluator import EVALUATION_GRACE_S, EvaluatorRole

TASK_ID = sha256(b"a task")
MINERS = [key("m0"), key("m1"), key("m2")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def final(miner: KeyPair, seed: bytes = b"", corrupt: bool = False) -> FinalModel:
    model = build_model(IRIS.model, seed=seed or miner.public_key)
    digest = sha256(b"another model") if corrupt else model_hash(model)
    return FinalModel(TASK_ID, miner.public_key, digest, model_to_bytes(model), 10)


def setup(
    tmp_path: Path,
    *,
    evaluator: str = "node",
    excluded: Callable[[bytes], set[str]] = lambda task_id: set(),
) -> tuple[NodeContext, FakeLedger, EvaluatorRole, Clock]:
    node = context(tmp_path)
    ledger = FakeLedger()
    ledger.add_task(task(TASK_ID), assignment(MINERS, evaluators=[key(evaluator)]))
    clock = Clock()
    role = EvaluatorRole(node, ledger, excluded=excluded, clock=clock)  # type: ignore[arg-type]
    return node, ledger, role, clock


async def settled(ledger: FakeLedger, node: NodeContext, timeout: float = 20.0) -> None:
    """Until the spawned evaluation has submitted, or given up."""
    deadline = time.monotonic() + timeout
    progress = node.tasks.of(TASK_ID)
    while not ledger.submitted and not progress.failure:
        assert time.monotonic() < deadline, "the evaluation did not finish in time"
        await asyncio.sleep(0.01)


def result(ledger: FakeLedger) -> TaskResult:
    (submitted,) = ledger.submitted
    assert isinstance(submitted, TaskResult)
    return submitted


def arrive(node: NodeContext, model: FinalModel) -> None:
    node.tasks.store_model(model)
    node.events.final_model.emit(model)


def run(scenario: Callable[[], object]) -> None:
    async def main() -> None:
        await scenario()  # type: ignore[misc]

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def assert_never_evaluated(node: NodeContext, ledger: FakeLedger, clock: Clock) -> None:
    """Every model arrives and the grace passes twice over, yet nothing is evaluated."""

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner))
        clock.now += 2 * EVALUATION_GRACE_S
        node.events.tick.emit(2)
        await asyncio.sleep(0.05)

    run(scenario)
    assert ledger.submitted == [] and not node.tasks.of(TASK_ID).evaluating


def test_it_waits_for_every_drawn_miners_final_model(tmp_path: Path) -> None:
    node, ledger, _, _ = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[0]))
        arrive(node, final(MINERS[1]))
        await asyncio.sleep(0.05)
        assert ledger.submitted == [] and not node.tasks.of(TASK_ID).evaluating
        arrive(node, final(MINERS[2]))
        await settled(ledger, node)

    run(scenario)
    paid = result(ledger)
    assert {entry.miner for entry in paid.ranking} == {m.address for m in MINERS}
    accuracies = [entry.accuracy for entry in paid.ranking]
    assert accuracies == sorted(accuracies, reverse=True)
    assert sum(p.amount for p in paid.payouts) == ledger.state.tasks[TASK_ID].escrow


def test_after_the_grace_it_ranks_the_models_at_hand(tmp_path: Path) -> None:
    node, ledger, _, clock = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[0]))
        arrive(node, final(MINERS[2]))
        clock.now += EVALUATION_GRACE_S - 1
        node.events.tick.emit(2)
        assert ledger.submitted == []
        clock.now += 2
        node.events.tick.emit(3)  # odd ticks do not look again
        assert not node.tasks.of(TASK_ID).evaluating
        node.events.tick.emit(4)
        await settled(ledger, node)

    run(scenario)
    assert {e.miner for e in result(ledger).ranking} == {MINERS[0].address, MINERS[2].address}


def test_a_node_not_drawn_as_evaluator_never_evaluates(tmp_path: Path) -> None:
    node, ledger, _, clock = setup(tmp_path, evaluator="m3")
    assert_never_evaluated(node, ledger, clock)


def test_slashed_and_screened_out_miners_are_left_out_of_the_ranking(tmp_path: Path) -> None:
    flagged = {MINERS[1].address}
    node, ledger, _, _ = setup(tmp_path, excluded=lambda task_id: flagged)
    slashed = ledger.draws[TASK_ID].miners[0]
    del ledger.state.tickets[slashed.ticket_id]

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[2]))  # the only miner still ranked: no need to wait
        await settled(ledger, node)

    run(scenario)
    paid = result(ledger)
    assert [e.miner for e in paid.ranking] == [MINERS[2].address]
    assert {p.recipient for p in paid.payouts}.isdisjoint({MINERS[0].address, MINERS[1].address})


def test_a_model_that_is_not_what_it_claims_is_not_ranked(tmp_path: Path) -> None:
    node, ledger, _, _ = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner, corrupt=True))
        await settled(ledger, node)

    run(scenario)
    progress = node.tasks.of(TASK_ID)
    assert ledger.submitted == [] and progress.failure == "no final model passed evaluation"


def test_a_refused_result_is_tried_again(tmp_path: Path) -> None:
    node, ledger, _, _ = setup(tmp_path)
    ledger.refuse = InvalidTransaction(Reason.OVERSPEND, "the fee")

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner))
        deadline = time.monotonic() + 20
        progress = node.tasks.of(TASK_ID)
        while progress.evaluating:  # until the spawned evaluation was refused
            assert time.monotonic() < deadline, "the evaluation did not finish in time"
            await asyncio.sleep(0.01)
        assert ledger.submitted == [] and not progress.evaluating
        ledger.refuse = None
        node.events.tick.emit(2)
        await settled(ledger, node)

    run(scenario)
    assert len(result(ledger).ranking) == 3


def test_a_result_of_ours_still_pending_is_not_signed_again(tmp_path: Path) -> None:
    """A restart replays our TASK_RESULT into the mempool from the journal: a second one that
    differs would be slashing evidence against us (`pouw.blockchain.slashing`)."""
    node, ledger, _, clock = setup(tmp_path)
    ours = TaskResult(TASK_ID, (), ())
    ledger.mempool.pending.append(
        sign_transaction(node.key, ours, nonce=0, fee=1, chain_id=PARAMS.chain_id)
    )
    assert_never_evaluated(node, ledger, clock)


def test_a_closed_task_is_not_evaluated(tmp_path: Path) -> None:
    node, ledger, _, clock = setup(tmp_path)
    record = ledger.state.tasks[TASK_ID]
    ledger.state.tasks[TASK_ID] = msgspec.structs.replace(record, status="completed")
    assert_never_evaluated(node, ledger, clock)
