"""The evaluator role against fakes: when it evaluates, whom it ranks, and that no missing
or junk final model ends its watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from tests.node.fakes import IRIS, PARAMS, FakeLedger, assignment, context, key, task

from pouw.blockchain.settlement import evaluation_height
from pouw.blockchain.transactions import TaskResult, sign_transaction
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidTransaction, Reason
from pouw.ml.models import build_model, model_hash, model_to_bytes
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel
from pouw.node.roles.evaluator import EvaluatorRole

TASK_ID = sha256(b"a task")
MINERS = [key("m0"), key("m1"), key("m2")]


def final(miner: KeyPair, seed: bytes = b"", corrupt: bool = False) -> FinalModel:
    model = build_model(IRIS.model, seed=seed or miner.public_key)
    digest = sha256(b"another model") if corrupt else model_hash(model)
    return FinalModel(TASK_ID, miner.public_key, digest, model_to_bytes(model), 10)


def setup(
    tmp_path: Path,
    *,
    evaluator: str = "node",
    excluded: Callable[[bytes], set[str]] = lambda task_id: set(),
) -> tuple[NodeContext, FakeLedger, EvaluatorRole]:
    node = context(tmp_path)
    ledger = FakeLedger()
    ledger.add_task(task(TASK_ID), assignment(MINERS, evaluators=[key(evaluator)]))
    role = EvaluatorRole(node, ledger, excluded=excluded)  # type: ignore[arg-type]
    return node, ledger, role


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0)  # let what was just spawned start
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        await asyncio.sleep(0.01)


async def settled(ledger: FakeLedger) -> None:
    await until(lambda: bool(ledger.submitted), "the evaluation's submission")


async def idle(node: NodeContext) -> None:
    await until(lambda: not node.tasks.of(TASK_ID).evaluating, "the end of the evaluation")


def reach_evaluation_height(ledger: FakeLedger) -> None:
    record = ledger.state.tasks[TASK_ID]
    ledger.chain.height = evaluation_height(ledger.state.params, record) - 1


def result(ledger: FakeLedger) -> TaskResult:
    (submitted,) = ledger.submitted
    assert isinstance(submitted, TaskResult)
    return submitted


def arrive(node: NodeContext, model: FinalModel) -> None:
    node.tasks.store_model(model)
    node.events.final_model.emit(model)


async def all_hand_in_and_settle(node: NodeContext, ledger: FakeLedger) -> None:
    """Every drawn miner hands in its final model, and the evaluator sends its result."""
    node.background.loop = asyncio.get_running_loop()
    for miner in MINERS:
        arrive(node, final(miner))
    await settled(ledger)


def run(scenario: Callable[[], object]) -> None:
    async def main() -> None:
        await scenario()  # type: ignore[misc]

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def assert_never_evaluated(node: NodeContext, ledger: FakeLedger) -> None:
    """Every model arrives and the evaluation height passes, yet nothing is evaluated."""

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner))
        reach_evaluation_height(ledger)
        node.events.tick.emit(2)
        await asyncio.sleep(0.05)

    run(scenario)
    assert ledger.submitted == [] and not node.tasks.of(TASK_ID).evaluating


def test_it_waits_for_every_drawn_miners_final_model(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[0]))
        arrive(node, final(MINERS[1]))
        node.events.tick.emit(2)
        await asyncio.sleep(0.05)
        assert ledger.submitted == [] and not node.tasks.of(TASK_ID).evaluating
        arrive(node, final(MINERS[2]))
        await settled(ledger)

    run(scenario)
    paid = result(ledger)
    assert {entry.miner for entry in paid.ranking} == {m.address for m in MINERS}
    accuracies = [entry.accuracy for entry in paid.ranking]
    assert accuracies == sorted(accuracies, reverse=True)


def test_at_the_evaluation_height_it_ranks_the_models_at_hand(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[0]))
        arrive(node, final(MINERS[2]))
        ledger.chain.height = evaluation_height(PARAMS, ledger.state.tasks[TASK_ID]) - 2
        node.events.tick.emit(2)
        assert not node.tasks.of(TASK_ID).evaluating
        reach_evaluation_height(ledger)
        node.events.tick.emit(3)  # odd ticks do not look again
        assert not node.tasks.of(TASK_ID).evaluating
        node.events.tick.emit(4)
        await settled(ledger)

    run(scenario)
    assert {e.miner for e in result(ledger).ranking} == {MINERS[0].address, MINERS[2].address}


def test_a_node_not_drawn_as_evaluator_never_evaluates(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path, evaluator="m3")
    assert_never_evaluated(node, ledger)


def test_slashed_and_screened_out_miners_are_left_out_of_the_ranking(tmp_path: Path) -> None:
    flagged = {MINERS[1].address}
    node, ledger, _ = setup(tmp_path, excluded=lambda task_id: flagged)
    slashed = ledger.draws[TASK_ID].miners[0]
    del ledger.state.tickets[slashed.ticket_id]

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        arrive(node, final(MINERS[2]))  # the only miner still ranked: no need to wait
        await settled(ledger)

    run(scenario)
    assert [e.miner for e in result(ledger).ranking] == [MINERS[2].address]


def test_junk_final_models_never_end_its_watch(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner, corrupt=True))
        await idle(node)
        assert ledger.submitted == [] and not node.tasks.of(TASK_ID).failure
        node.events.tick.emit(2)  # the same junk is not scored again ...
        assert not node.tasks.of(TASK_ID).evaluating
        arrive(node, final(MINERS[1]))  # ... but a sound model is
        await settled(ledger)

    run(scenario)
    assert [e.miner for e in result(ledger).ranking] == [MINERS[1].address]


def test_a_refused_result_is_tried_again(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)
    ledger.refuse = InvalidTransaction(Reason.OVERSPEND, "the fee")

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner))
        await idle(node)
        assert ledger.submitted == []
        ledger.refuse = None
        node.events.tick.emit(2)
        await settled(ledger)

    run(scenario)
    assert len(result(ledger).ranking) == 3


def test_a_result_dropped_unmined_is_sent_again(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)

    async def scenario() -> None:
        await all_hand_in_and_settle(node, ledger)
        node.events.tick.emit(2)
        await asyncio.sleep(0.05)
        assert len(ledger.submitted) == 1, "still in the mempool: not sent twice"
        ledger.mempool.clear()  # evicted before any block took it
        node.events.tick.emit(4)
        await until(lambda: len(ledger.submitted) == 2, "a second submission")

    run(scenario)
    first, again = ledger.submitted
    assert first == again


def test_a_result_dropped_unmined_is_sent_again_as_it_was_after_a_restart(tmp_path: Path) -> None:
    """Scored again after a restart, other candidates would give another ranking: two different
    results for one task are slashing evidence, so the one signed before is sent again."""
    node, ledger, _ = setup(tmp_path)

    async def before_the_restart() -> None:
        await all_hand_in_and_settle(node, ledger)

    run(before_the_restart)
    ledger.mempool.clear()  # evicted, then the node stopped
    restarted = context(tmp_path)
    EvaluatorRole(restarted, ledger)  # type: ignore[arg-type]

    async def after_the_restart() -> None:
        restarted.background.loop = asyncio.get_running_loop()
        arrive(restarted, final(MINERS[0], seed=b"another model by m0"))
        await until(lambda: len(ledger.submitted) == 2, "a second submission")

    run(after_the_restart)
    first, again = ledger.submitted
    assert first == again


def test_a_refusal_no_retry_can_change_ends_its_tries(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)
    ledger.refuse = InvalidTransaction(Reason.RESULT_ALREADY_SENT, "sent before a restart")

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        for miner in MINERS:
            arrive(node, final(miner))
        await asyncio.sleep(0)
        assert node.tasks.of(TASK_ID).evaluating
        await until(lambda: bool(ledger.refused), "the refusal")
        node.events.tick.emit(2)
        assert node.tasks.of(TASK_ID).evaluating, "not scored again"

    run(scenario)


def test_a_result_of_ours_still_pending_is_not_signed_again(tmp_path: Path) -> None:
    """A restart replays our TASK_RESULT into the mempool from the journal: a second one that
    differs would be slashing evidence against us (`pouw.blockchain.slashing`)."""
    node, ledger, _ = setup(tmp_path)
    ours = TaskResult(TASK_ID, ())
    ledger.mempool.pending.append(
        sign_transaction(node.key, ours, nonce=0, fee=1, chain_id=PARAMS.chain_id)
    )
    assert_never_evaluated(node, ledger)


def test_a_closed_task_is_not_evaluated(tmp_path: Path) -> None:
    node, ledger, _ = setup(tmp_path)
    record = ledger.state.tasks[TASK_ID]
    ledger.state.tasks[TASK_ID] = msgspec.structs.replace(record, status="completed")
    assert_never_evaluated(node, ledger)
