"""Final models at the intake, against fakes: accepted only from the task's drawn miners and
signed over their bytes; an outsider's junk model is dropped with its sender penalised, and
does not keep the drawn evaluator from settling the task with the drawn miners' models."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from tests.node.fakes import IRIS, PARAMS, FakeAnnouncer, FakeLedger, assignment, context, key, task

from pouw.blockchain.chain import AddStatus, ChainUpdate
from pouw.blockchain.settlement import evaluation_height
from pouw.blockchain.transactions import TaskResult
from pouw.budgets import WAITING_MODEL_BLOCKS, ByteBudget
from pouw.crypto import KeyPair, sha256
from pouw.errors import Reason
from pouw.ml.models import build_model, model_hash, model_to_bytes
from pouw.monitoring.health import HealthTracker
from pouw.network.drops import ITEM_REJECTION_SCORE, ban_points
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.intake import Intake
from pouw.node.items import FinalModel, encode_item, sign_final_model
from pouw.node.roles.evaluator import EvaluatorRole
from pouw.node.waiting_models import WaitingModels

TASK_ID = sha256(b"a task")
MINERS = [key("m0"), key("m1")]
OUTSIDER = key("m3")


def setup(tmp_path: Path) -> tuple[FakeLedger, Intake]:
    ledger = FakeLedger()
    ledger.add_task(task(TASK_ID), assignment(MINERS, evaluators=[key("node")]))
    intake = Intake(context(tmp_path), ledger, FakeAnnouncer(), HealthTracker())  # type: ignore[arg-type]
    return ledger, intake


def final(miner: KeyPair, junk: bool = False) -> FinalModel:
    model = build_model(IRIS.model, seed=miner.public_key)
    data = b"\x00" * 64 if junk else model_to_bytes(model)
    return sign_final_model(
        miner, PARAMS.chain_id, FinalModel(TASK_ID, miner.public_key, model_hash(model), data, 10)
    )


def send(intake: Intake, model: FinalModel, item_id: bytes | None = None) -> ItemResult:
    announced = item_id if item_id is not None else model.item_id()
    return asyncio.run(intake.on_item(ItemKind.MODEL, announced, encode_item(model), "peer"))


def test_an_outsiders_final_model_is_dropped_and_its_sender_penalised(tmp_path: Path) -> None:
    _, intake = setup(tmp_path)
    answer = send(intake, final(OUTSIDER, junk=True))
    assert (answer.verdict, answer.reason) == (Verdict.REJECTED, Reason.NOT_DRAWN_MINER)
    assert ban_points(answer.reason) == ITEM_REJECTION_SCORE
    assert intake.context.tasks.of(TASK_ID).final_models == {}
    assert send(intake, final(MINERS[0])).verdict == Verdict.ACCEPTED


def test_bytes_substituted_under_a_final_models_id_are_refused(tmp_path: Path) -> None:
    _, intake = setup(tmp_path)
    honest = final(MINERS[0])
    swapped = msgspec.structs.replace(honest, model=b"\x00" * 64)
    same_id = send(intake, swapped, honest.item_id())
    assert (same_id.verdict, same_id.reason) == (Verdict.REJECTED, Reason.ID_MISMATCH)
    own_id = send(intake, swapped)  # announced under the id its bytes give: not what was signed
    assert (own_id.verdict, own_id.reason) == (Verdict.REJECTED, Reason.BAD_SIGNATURE)
    assert intake.context.tasks.of(TASK_ID).final_models == {}
    assert send(intake, honest).verdict == Verdict.ACCEPTED


def test_a_junk_model_before_the_real_ones_does_not_stop_the_task(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    node = intake.context
    EvaluatorRole(node, ledger)  # type: ignore[arg-type]

    async def scenario() -> None:
        node.background.loop = asyncio.get_running_loop()
        junk = final(OUTSIDER, junk=True)
        await intake.on_item(ItemKind.MODEL, junk.item_id(), encode_item(junk), "peer")
        record = ledger.state.tasks[TASK_ID]
        ledger.chain.height = evaluation_height(PARAMS, record) - 2  # long after the junk
        for tick in range(2, 8):
            node.events.tick.emit(tick)
        await asyncio.sleep(0.05)
        assert not ledger.submitted and not node.tasks.of(TASK_ID).evaluating
        for model in (final(miner) for miner in MINERS):
            await intake.on_item(ItemKind.MODEL, model.item_id(), encode_item(model), "peer")
        deadline = time.monotonic() + 20
        while not ledger.submitted:
            assert time.monotonic() < deadline, "the evaluation did not finish in time"
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    (result,) = ledger.submitted
    assert isinstance(result, TaskResult)
    assert {entry.miner for entry in result.ranking} == {miner.address for miner in MINERS}
    ledger.state.check_payload(result, key("node").address)  # valid by the ledger's rules


def changed(intake: Intake) -> None:
    intake.context.events.chain_changed.emit(ChainUpdate(AddStatus.EXTENDED, [], []))


def test_a_final_model_for_a_task_not_drawn_here_yet_waits_for_the_draw(tmp_path: Path) -> None:
    """A miner announces its final model once: a node behind the chain (syncing, or restarted)
    that dropped it would never evaluate the task."""
    ledger, intake = setup(tmp_path)
    drawn = ledger.state.tasks.pop(TASK_ID)
    answer = send(intake, final(MINERS[0]))  # a relay a block ahead knows the task
    assert (answer.verdict, answer.reason) == (Verdict.KNOWN, Reason.TASK_NOT_DRAWN)
    ledger.state.tasks[TASK_ID] = msgspec.structs.replace(drawn, drawn=None)
    send(intake, final(OUTSIDER))
    assert send(intake, final(MINERS[1], junk=True), item_id=sha256(b"x")).reason == "id_mismatch"
    changed(intake)  # the task is known, not drawn yet: they wait
    assert intake.context.tasks.of(TASK_ID).final_models == {}
    ledger.state.tasks[TASK_ID] = drawn
    changed(intake)
    held = intake.context.tasks.of(TASK_ID).final_models
    assert list(held) == [MINERS[0].address], "the drawn miner's model taken, the outsider's not"
    assert len(intake.waiting) == 0


def test_waiting_final_models_are_bounded_in_bytes_and_let_go_with_their_task(
    tmp_path: Path,
) -> None:
    ledger, intake = setup(tmp_path)
    ledger.state.tasks.pop(TASK_ID)
    intake.waiting = WaitingModels(ByteBudget(per_sender=2_000, total=20_000))
    flood = [final(key(f"throwaway-{i}")) for i in range(100)]
    for model in flood:
        send(intake, model)
    assert intake.waiting.budget.used <= intake.waiting.budget.total
    assert intake.waiting.budget.used >= intake.waiting.budget.total - len(flood[0].model)
    ledger.chain.height += WAITING_MODEL_BLOCKS + 1
    changed(intake)  # their task never showed up
    assert len(intake.waiting) == 0 and intake.waiting.budget.used == 0
