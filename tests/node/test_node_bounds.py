"""What a peer can make a node remember is bounded: iterations for a task that is not on chain
are relayed but leave no progress and no journal behind; final models (of drawn miners only, none
larger than its task's spec implies) are kept on disk within a byte budget, their items in
memory (pouw.budgets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.node.fakes import PARAMS, FakeAnnouncer, FakeLedger, assignment, context, task
from tests.support.items import iteration_message
from tests.support.nodes import local_node

from pouw.budgets import FINAL_MODEL_ITEM_BYTES, MIB, final_model_bytes
from pouw.config import NodeConfig
from pouw.crypto import KeyPair, address_of, sha256
from pouw.errors import Reason
from pouw.monitoring.health import HealthTracker
from pouw.network.drops import ITEM_REJECTION_SCORE, ban_points
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.intake import Intake
from pouw.node.items import (
    FinalModel,
    IterationBatch,
    IterationRecord,
    encode_item,
    sign_batch,
    sign_final_model,
)
from pouw.roles import NodeRole

CHAIN = NodeConfig().chain_id


def _batch(key: KeyPair, task_id: bytes) -> IterationBatch:
    message = iteration_message(task_id, key.public_key).encode()
    record = IterationRecord(message, b"", bytes(64))  # unchecked by the relay
    return sign_batch(key, CHAIN, IterationBatch(key.public_key, (record,)))


def test_iterations_for_a_task_not_on_chain_leave_nothing_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path, "supervisor", NodeRole.SUPERVISOR)
        await node.start()
        try:
            unknown = {sha256(b"no such task %d" % number) for number in range(20)}
            for task_id in unknown:
                batch = _batch(KeyPair.generate(), task_id)
                result = await node.intake.on_item(
                    ItemKind.ITERATION, batch.item_id(), encode_item(batch), "peer"
                )
                assert result.verdict == Verdict.ACCEPTED  # relayed: the relay may be behind
            assert unknown.isdisjoint(node.tasks.progress)
            assert not (tmp_path / "iterations").exists()
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def _model_of(key: KeyPair, task_id: bytes, size: int) -> FinalModel:
    model = bytes([key.public_key[0]]) * size
    unsigned = FinalModel(task_id, key.public_key, sha256(model), model, 1)
    return sign_final_model(key, PARAMS.chain_id, unsigned)


def _bytes_on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_oversized_final_models_from_drawn_miners_leave_only_the_honest_one(
    tmp_path: Path,
) -> None:
    """100 MiB of final models from 50 keys drawn for the task (strangers' models are refused
    before their bytes count: tests/node/test_final_models.py), each larger than the task's
    spec allows: all refused and scored; the honest model, of the spec's size, is kept on disk,
    and memory holds its item only."""
    task_id = sha256(b"a task")
    honest, flood = KeyPair.generate(), [KeyPair.generate() for _ in range(50)]
    ledger = FakeLedger()
    ledger.add_task(task(task_id), assignment([honest, *flood]))
    intake = Intake(context(tmp_path), ledger, FakeAnnouncer(), HealthTracker())  # type: ignore[arg-type]
    largest = final_model_bytes(ledger.state.tasks[task_id].spec.model)
    finals = [_model_of(honest, task_id, largest)]
    finals += [_model_of(miner, task_id, 2 * MIB) for miner in flood]
    outcomes = [
        asyncio.run(intake.on_item(ItemKind.MODEL, f.item_id(), encode_item(f), "peer"))
        for f in finals
    ]
    assert outcomes[0].verdict == Verdict.ACCEPTED
    assert all(o == ItemResult(Verdict.REJECTED, Reason.MODEL_TOO_LARGE) for o in outcomes[1:])
    assert ban_points(Reason.MODEL_TOO_LARGE) == ITEM_REJECTION_SCORE
    books = intake.context.tasks
    kept = books.of(task_id).final_models
    assert list(kept) == [address_of(honest.public_key)]
    assert sum(len(final.model) for final in kept.values()) == 0  # the bytes are on disk only
    on_disk = _bytes_on_disk(tmp_path / "models")
    assert on_disk == books.model_budget.used <= largest + FINAL_MODEL_ITEM_BYTES
    assert books.model_bytes(task_id, finals[0].model_hash) == finals[0].model
    counted = intake.context.metrics.registry.get_sample_value(
        "pouw_over_budget_total", {"store": "final_models", "reason": "model_too_large"}
    )
    assert counted == len(flood)
