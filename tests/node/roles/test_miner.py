"""The miner role against fakes: which job it trains, what it publishes of its work, what it
takes from its peers. The mining threads are not started: the test hands back what they
would (blocks, iterations, finished training) as the loop would receive it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import torch
from tests.node.fakes import (
    IRIS,
    PARAMS,
    FakeAnnouncer,
    FakeLedger,
    assignment,
    block,
    context,
    key,
    message_of,
    record,
    task,
)

from pouw.blockchain.chain import AddStatus, ChainUpdate
from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.state import TaskRecord
from pouw.blockchain.transactions import WithdrawFromTask
from pouw.crypto import sha256
from pouw.errors import InvalidBlock, Reason
from pouw.mining.miner import PublishedIteration
from pouw.mining.trainer import TaskTrainer
from pouw.ml.compression import CompressedUpdate
from pouw.ml.datasets import load_dataset
from pouw.ml.models import model_hash
from pouw.network.messages import ItemKind
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel, IterationBatch, decode_item, has_valid_signature
from pouw.node.roles.miner import ITERATION_BATCH_MAX, MinerRole
from pouw.node.worker import FinishedTraining

OLD, NEW = sha256(b"old task"), sha256(b"new task")
PEERS = [key("m1"), key("m2")]


def setup(tmp_path: Path) -> tuple[NodeContext, FakeLedger, FakeAnnouncer, MinerRole]:
    node = context(tmp_path)
    ledger = FakeLedger()
    announcer = FakeAnnouncer()
    role = MinerRole(node, ledger, announcer)  # type: ignore[arg-type]
    return node, ledger, announcer, role


def changed(node: NodeContext) -> None:
    node.events.chain_changed.emit(ChainUpdate(AddStatus.EXTENDED, [], []))


def test_without_a_drawn_task_it_trains_the_bootstrap_task(tmp_path: Path) -> None:
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(task(NEW), assignment(PEERS))  # drawn others
    changed(node)
    assert role.job is not None and not role.job.client_task
    assert role.job.task_id == bootstrap_task_id(PARAMS)
    assert role.activity.describe() == "not mining"


def test_of_equally_paid_tasks_it_trains_the_oldest_it_was_drawn_for(tmp_path: Path) -> None:
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(task(NEW, height=5), assignment([PEERS[0], node.key]))
    ledger.add_task(task(OLD, height=2), assignment([node.key, *PEERS]))
    changed(node)
    assert role.job is not None and (role.job.task_id, role.job.worker_index) == (OLD, 0)
    assert role.job.client_task and role.job.peers is not None
    assert node.metrics.registry.get_sample_value("pouw_task_assigned") == 1
    node.tasks.of(OLD).failure = "training diverged: nan"  # a failed task is left
    changed(node)
    assert role.job is not None and (role.job.task_id, role.job.worker_index) == (NEW, 1)


def test_peers_updates_reach_the_trainers_inbox_never_its_own(tmp_path: Path) -> None:
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(task(OLD), assignment([node.key, *PEERS]))
    changed(node)
    assert role.job is not None and role.job.peers is not None
    size = role.job.peers.size
    indices = torch.arange(size)
    update = CompressedUpdate(size, 0.01, indices, torch.ones(size, dtype=torch.int8)).to_bytes()
    for sender in (*PEERS, node.key):
        node.events.peer_iteration.emit(
            message_of(sender, OLD), record(message_of(sender, OLD), update)
        )
    latest = role.job.peers.latest()
    assert len(latest) == 2


def published(node: NodeContext, task_id: bytes, iteration: int) -> PublishedIteration:
    message = message_of(node.key, task_id, iteration=iteration)
    return PublishedIteration(message.encode(), b"", bytes(64))


def test_its_iterations_go_out_in_signed_batches_for_client_tasks_only(tmp_path: Path) -> None:
    node, ledger, announcer, role = setup(tmp_path)
    changed(node)  # the bootstrap task
    seen: list[bytes] = []
    node.events.iteration_record.subscribe(lambda kept: seen.append(kept.message))
    role.on_iteration(published(node, role.job.task_id, 1))  # type: ignore[union-attr]
    node.events.tick.emit(1)
    assert announcer.announced == [] and seen == []
    ledger.add_task(task(OLD), assignment([node.key]))
    changed(node)
    for iteration in range(3):
        role.on_iteration(published(node, OLD, iteration))
    assert announcer.announced == [] and len(seen) == 3
    assert node.tasks.of(OLD).miners[node.address].iterations == 3
    node.events.tick.emit(2)
    ((kind, item_id, payload),) = announcer.announced
    batch = decode_item(IterationBatch, payload)
    assert kind == ItemKind.ITERATION and batch.item_id() == item_id
    assert len(batch.records) == 3 and has_valid_signature(
        batch, node.key.public_key, node.params.chain_id
    )
    for iteration in range(ITERATION_BATCH_MAX):
        role.on_iteration(published(node, OLD, iteration))
    assert len(announcer.announced) == 2  # a full batch does not wait for the tick


def test_its_blocks_are_announced_once_the_ledger_takes_them(tmp_path: Path) -> None:
    node, ledger, announcer, role = setup(tmp_path)
    mined = block(node.key)
    role.on_block(mined)
    assert announcer.kinds() == [ItemKind.BLOCK] and ledger.accepted == [mined]
    assert node.reputation.score(node.address) > node.reputation.score(key("m1").address)
    ledger.reject = InvalidBlock(Reason.TARGET_NOT_MET, "stale template")
    role.on_block(block(node.key, height=6))
    assert announcer.kinds() == [ItemKind.BLOCK] and node.counters.blocks_rejected == 1
    assert ledger.templates == 1  # the template is rebuilt on the tip


@pytest.mark.parametrize(("attack", "published"), [("fake_work", True), ("sign_flip", False)])
def test_only_a_fake_worker_publishes_its_own_rejected_blocks(
    tmp_path: Path, attack: str, published: bool
) -> None:
    """A fake worker's forged blocks are its attack, published to be caught; an update
    attacker's blocks are honest work, dropped when a race made them invalid."""
    node, ledger, announcer, role = setup(tmp_path)
    node.config.attack = attack
    ledger.reject = InvalidBlock(Reason.NOT_DRAWN, "a block on a stale template")
    role.on_block(block(node.key))
    assert announcer.kinds() == ([ItemKind.BLOCK] if published else [])
    assert node.counters.blocks_rejected == 1


def test_a_task_whose_final_model_it_signed_is_never_trained_again(tmp_path: Path) -> None:
    """After a restart its stored final model comes back: a second, different one for the task
    would be slashing evidence against it (`pouw.blockchain.slashing`)."""
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(task(OLD, height=2), assignment([node.key]))
    changed(node)
    assert role.job is not None and role.job.task_id == OLD
    node.events.final_model.emit(FinalModel(OLD, node.key.public_key, sha256(b"m"), b"", 9))
    assert role.job is not None and role.job.task_id != OLD
    changed(node)
    assert role.job is not None and role.job.task_id != OLD


def test_a_finished_task_sends_its_final_model_and_moves_on(tmp_path: Path) -> None:
    node, ledger, announcer, role = setup(tmp_path)
    ledger.add_task(task(OLD, height=2), assignment([node.key]))
    ledger.add_task(task(NEW, height=5), assignment([node.key]))
    changed(node)
    assert role.job is not None and role.job.task_id == OLD
    trainer = TaskTrainer(OLD, IRIS, load_dataset(IRIS.dataset), node.key.public_key)
    stored: list[FinalModel] = []
    node.events.final_model.subscribe(stored.append)
    role.on_finished(FinishedTraining(role.job, trainer))
    (final,) = stored
    assert (final.task_id, final.miner) == (OLD, node.key.public_key)
    assert final.model_hash == model_hash(trainer.model)
    assert has_valid_signature(final, node.key.public_key, node.params.chain_id)
    assert node.tasks.with_bytes(node.tasks.of(OLD).final_models[node.address]) == final
    assert announcer.kinds() == [ItemKind.MODEL]
    assert role.job is not None and role.job.task_id == NEW


def test_a_failed_task_is_marked_failed_and_left_on_chain_also_after_a_restart(
    tmp_path: Path,
) -> None:
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(task(OLD), assignment([node.key]))
    changed(node)
    assert role.job is not None
    role.on_failed(role.job, "training diverged: loss is nan")
    assert node.tasks.of(OLD).failure == "training diverged: loss is nan"
    failures = node.metrics.registry.get_sample_value
    assert failures("pouw_training_failures_total", {"kind": "diverged"}) == 1
    assert role.job is not None and not role.job.client_task
    assert ledger.submitted == [WithdrawFromTask(OLD, "training diverged: loss is nan")]
    restarted = context(tmp_path)  # a fresh task book, the same data dir
    again = MinerRole(restarted, ledger, FakeAnnouncer())  # type: ignore[arg-type]
    changed(restarted)
    assert again.job is not None and not again.job.client_task
    view = restarted.tasks.view(task(OLD), assignment([node.key]), evaluating=False)
    assert (view.phase, view.message) == ("failed", "training diverged: loss is nan")
    assert len(ledger.submitted) == 1, "its withdrawal waits in the mempool: not sent twice"
    ledger.mempool.clear()  # lost before it was mined
    changed(restarted)
    assert ledger.submitted[1:] == [WithdrawFromTask(OLD, "training diverged: loss is nan")]


CHEAP_AND_HUGE = msgspec.structs.replace(IRIS, epochs=10_000)


def test_a_well_paid_task_is_trained_and_finished_while_a_cheap_huge_one_waits(
    tmp_path: Path,
) -> None:
    node, ledger, _, role = setup(tmp_path)
    ledger.add_task(
        TaskRecord(OLD, key("client").address, CHEAP_AND_HUGE, 1, 1), assignment([node.key])
    )
    changed(node)
    assert role.job is not None and role.job.task_id == OLD  # nothing better: it trains
    ledger.add_task(task(NEW, height=9), assignment([node.key]))  # 100 coins, 4 epochs
    changed(node)
    assert role.job is not None and role.job.task_id == NEW, "the better paid task first"
    trainer = TaskTrainer(NEW, IRIS, load_dataset(IRIS.dataset), node.key.public_key)
    role.on_finished(FinishedTraining(role.job, trainer))
    assert node.tasks.of(NEW).final_models[node.address].task_id == NEW
    assert role.job is not None and role.job.task_id == OLD, "then the cheap one resumes"


def test_its_final_model_is_offered_again_while_the_task_is_open(tmp_path: Path) -> None:
    """A miner announces a final model once; an evaluator that was down or behind then would
    wait for it until the task's deadline, so it is offered again every 10 s until the task
    closes (peers that hold it are not sent it again: the gossip's known set)."""
    node, ledger, announcer, role = setup(tmp_path)
    ledger.add_task(task(NEW), assignment([node.key]))
    changed(node)
    assert role.job is not None and role.job.task_id == NEW
    trainer = TaskTrainer(NEW, IRIS, load_dataset(IRIS.dataset), node.key.public_key)
    role.on_finished(FinishedTraining(role.job, trainer))
    (first,) = [item for kind, item, _ in announcer.announced if kind == ItemKind.MODEL]
    for tick in range(1, 41):
        node.events.tick.emit(tick)
    models = [item for kind, item, _ in announcer.announced if kind == ItemKind.MODEL]
    assert models == [first, first, first], "at ticks 20 and 40"
    record = ledger.state.tasks[NEW]
    ledger.state.tasks[NEW] = msgspec.structs.replace(record, status="completed")
    node.events.tick.emit(60)
    assert [item for kind, item, _ in announcer.announced if kind == ItemKind.MODEL] == models
