"""Final models at the intake, against fakes: accepted only from the task's drawn miners and
signed over their bytes; an outsider's junk model is dropped with its sender penalised, and
does not keep the drawn evaluator from settling the task with the drawn miners' models."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from tests.node.fakes import IRIS, PARAMS, FakeAnnouncer, FakeLedger, assignment, context, key, task

from pouw.blockchain.settlement import evaluation_height
from pouw.blockchain.transactions import TaskResult
from pouw.crypto import KeyPair, sha256
from pouw.errors import Reason
from pouw.ml.models import build_model, model_hash, model_to_bytes
from pouw.monitoring.health import HealthTracker
from pouw.network.drops import ITEM_REJECTION_SCORE, ban_points
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.intake import Intake
from pouw.node.items import FinalModel, encode_item, sign_final_model
from pouw.node.roles.evaluator import EvaluatorRole

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


def test_a_final_model_for_a_task_not_drawn_here_yet_is_dropped_unscored(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    record = ledger.state.tasks[TASK_ID]
    ledger.state.tasks[TASK_ID] = msgspec.structs.replace(record, drawn=None)
    answer = send(intake, final(MINERS[0]))  # a relay a block ahead knows the draw
    assert (answer.verdict, answer.reason) == (Verdict.KNOWN, Reason.TASK_NOT_DRAWN)
    assert intake.context.tasks.of(TASK_ID).final_models == {}
