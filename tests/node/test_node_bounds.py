"""What a peer can make a node remember is bounded: iterations for a task that is not on chain
are relayed but leave no progress and no journal behind; final models (of drawn miners only) are
kept within a byte budget, in memory and on disk (pouw.budgets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.node.fakes import PARAMS, FakeAnnouncer, FakeLedger, assignment, context, task
from tests.support.items import iteration_message
from tests.support.nodes import local_node

from pouw.budgets import FINAL_MODEL_BYTES_TOTAL, MIB
from pouw.config import NodeConfig
from pouw.crypto import KeyPair, address_of, sha256
from pouw.errors import Reason
from pouw.monitoring.health import HealthTracker
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


def test_final_models_from_many_drawn_miners_stay_within_the_byte_budget(tmp_path: Path) -> None:
    """100 MiB of final models from 50 keys drawn for the task (strangers' models are refused
    before their bytes count: tests/node/test_final_models.py): the node keeps at most its
    budget in memory and on disk, and the model of a miner that came first is still there."""
    task_id = sha256(b"a large task")
    honest, flood = KeyPair.generate(), [KeyPair.generate() for _ in range(50)]
    ledger = FakeLedger()
    ledger.add_task(task(task_id), assignment([honest, *flood]))
    intake = Intake(context(tmp_path), ledger, FakeAnnouncer(), HealthTracker())  # type: ignore[arg-type]
    finals = [_model_of(honest, task_id, 4 * MIB)]
    finals += [_model_of(miner, task_id, 2 * MIB) for miner in flood]
    outcomes = [
        asyncio.run(intake.on_item(ItemKind.MODEL, f.item_id(), encode_item(f), "peer"))
        for f in finals
    ]
    assert outcomes[0].verdict == Verdict.ACCEPTED
    refused = [o for o in outcomes if o.verdict != Verdict.ACCEPTED]
    assert refused and all(o == ItemResult(Verdict.KNOWN, Reason.STORE_FULL) for o in refused)
    books = intake.context.tasks
    kept = books.of(task_id).final_models
    in_memory = sum(len(final.model) for final in kept.values())
    assert in_memory <= books.model_budget.used <= FINAL_MODEL_BYTES_TOTAL
    assert _bytes_on_disk(tmp_path / "models") <= FINAL_MODEL_BYTES_TOTAL
    assert kept[address_of(honest.public_key)] == finals[0]
    assert books.model_bytes(task_id, finals[0].model_hash) == finals[0].model
    counted = intake.context.metrics.registry.get_sample_value(
        "pouw_over_budget_total", {"store": "final_models", "reason": "store_full"}
    )
    assert counted == len(refused)
