"""What a peer can make a node remember is bounded: iterations for a task that is not on chain
are relayed but leave no progress and no journal behind; final models are kept within a byte
budget, in memory and on disk (pouw.budgets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.items import iteration_message
from tests.support.nodes import local_node

from pouw.blockchain.params import bootstrap_task_id
from pouw.budgets import FINAL_MODEL_BYTES_TOTAL, MIB, RECENT_ITEM_BYTES_PER_KIND
from pouw.crypto import KeyPair, address_of, sha256
from pouw.errors import Reason
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.items import (
    FinalModel,
    IterationBatch,
    IterationRecord,
    encode_item,
    sign_batch,
    sign_final_model,
)
from pouw.roles import NodeRole


def _batch(key: KeyPair, task_id: bytes) -> IterationBatch:
    message = iteration_message(task_id, key.public_key).encode()
    record = IterationRecord(message, b"", key.sign(b"unchecked by the relay"))
    return sign_batch(key, IterationBatch(key.public_key, (record,)))


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
    return sign_final_model(key, FinalModel(task_id, key.public_key, sha256(model), model, 1))


def _bytes_on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_final_models_from_throwaway_keys_stay_within_the_byte_budget(tmp_path: Path) -> None:
    """100 MiB of final models from 50 throwaway keys: the node keeps at most its budget in
    memory and on disk, and the model of a miner that came first is still there."""

    async def scenario() -> None:
        node = local_node(tmp_path, "evaluator")
        await node.start()
        try:
            task_id = bootstrap_task_id(node.context.params)
            assert task_id is not None
            honest = _model_of(KeyPair.generate(), task_id, 4 * MIB)
            outcomes = []
            for final in [honest] + [
                _model_of(KeyPair.generate(), task_id, 2 * MIB) for _ in range(50)
            ]:
                outcomes.append(
                    await node.intake.on_item(
                        ItemKind.MODEL, final.item_id(), encode_item(final), "peer"
                    )
                )
            assert outcomes[0].verdict == Verdict.ACCEPTED
            refused = [o for o in outcomes if o.verdict != Verdict.ACCEPTED]
            assert refused and all(
                o == ItemResult(Verdict.KNOWN, Reason.STORE_FULL) for o in refused
            )
            kept = node.tasks.of(task_id).final_models
            in_memory = sum(len(final.model) for final in kept.values())
            assert in_memory <= node.tasks.model_budget.used <= FINAL_MODEL_BYTES_TOTAL
            assert _bytes_on_disk(tmp_path / "models") <= FINAL_MODEL_BYTES_TOTAL
            assert node.announcer.kept_bytes() <= RECENT_ITEM_BYTES_PER_KIND * len(ItemKind)
            assert kept[address_of(honest.miner)] == honest
            assert node.tasks.model_bytes(task_id, honest.model_hash) == honest.model
            counted = node.metrics.registry.get_sample_value(
                "pouw_over_budget_total", {"store": "final_models", "reason": "store_full"}
            )
            assert counted == len(refused)
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
