"""A miner's trainer saved between iterations and restored into a fresh one trains on exactly
as the original does; a mining worker with checkpoints resumes a client task after a stop."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest
import torch
from tests.mining.conftest import TINY

from pouw.bench.mining import MiningRig
from pouw.mining.checkpoint import TrainerCheckpoints
from pouw.mining.miner import MiningStats
from pouw.mining.trainer import TaskTrainer
from pouw.ml.iteration import configure_determinism
from pouw.node.worker import Job, MiningWorker

ADAM = msgspec.structs.replace(TINY, optimizer="adam", learning_rate=0.01)
"""Adam keeps per-parameter state: a checkpoint without it would train on differently."""


@pytest.fixture
def rig(tmp_path: Path) -> MiningRig:
    configure_determinism()
    return MiningRig(ADAM, tmp_path / "chain", difficulty=1 << 20)


def parameters(trainer: TaskTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_a_restored_trainer_trains_on_bit_for_bit(rig: MiningRig, tmp_path: Path) -> None:
    checkpoints = TrainerCheckpoints(tmp_path / "trainers")
    original = rig.trainer(ADAM)
    rig.miner().train(original, max_iterations=30)  # into the second epoch (28 per epoch)
    checkpoints.save(original)
    restored = rig.trainer(ADAM)
    assert checkpoints.restore(restored)
    assert (restored.epoch, restored.iteration, restored.commitment) == (
        original.epoch,
        original.iteration,
        original.commitment,
    )
    for trainer in (original, restored):
        rig.miner().train(trainer, max_iterations=5)
    for after_original, after_restored in zip(
        parameters(original), parameters(restored), strict=True
    ):
        assert torch.equal(after_original, after_restored)
    assert restored.commitment == original.commitment


def test_only_a_checkpoint_of_this_shard_and_model_is_restored(
    rig: MiningRig, tmp_path: Path
) -> None:
    checkpoints = TrainerCheckpoints(tmp_path / "trainers")
    assert not checkpoints.restore(rig.trainer(ADAM)), "none saved yet"
    trainer = rig.trainer(ADAM)
    rig.miner().train(trainer, max_iterations=3)
    checkpoints.save(trainer)
    other_shard = TaskTrainer(
        rig.task_id, ADAM, trainer.dataset, rig.miner_key.public_key, worker_index=1, workers=2
    )
    assert not checkpoints.restore(other_shard) and other_shard.completed_iterations == 0
    wider = msgspec.structs.replace(
        ADAM, model=msgspec.structs.replace(ADAM.model, layers=(64, 48, 10))
    )
    assert not checkpoints.restore(rig.trainer(wider))
    checkpoints.path(rig.task_id).write_bytes(b"torn by a kill")
    assert not checkpoints.restore(rig.trainer(ADAM))


def test_saves_are_spaced_and_closed_tasks_are_cleared(rig: MiningRig, tmp_path: Path) -> None:
    now = [0.0]
    checkpoints = TrainerCheckpoints(tmp_path / "trainers", every_s=10, clock=lambda: now[0])
    trainer = rig.trainer(ADAM)
    checkpoints.save_if_due(trainer)
    now[0] = 9.9
    checkpoints.save_if_due(trainer)
    assert not checkpoints.path(rig.task_id).exists()
    now[0] = 10.0
    checkpoints.save_if_due(trainer)
    assert checkpoints.path(rig.task_id).exists()
    checkpoints.keep_only([rig.task_id])
    assert checkpoints.path(rig.task_id).exists()
    checkpoints.keep_only([])
    assert not checkpoints.path(rig.task_id).exists()


def test_a_worker_resumes_a_client_task_where_it_stopped(rig: MiningRig, tmp_path: Path) -> None:
    job = Job(rig.task_id, ADAM, worker_index=0, workers=1, client_task=True)
    seen: list[int] = []
    enough = threading.Event()

    def progress(job: Job, trainer: TaskTrainer, stats: MiningStats) -> None:
        seen.append(trainer.completed_iterations)
        if len(seen) >= 20:
            enough.set()

    def worker() -> MiningWorker:
        return MiningWorker(
            rig.miner(),
            rig.miner_key.public_key,
            lambda: job,
            on_finished=lambda done: None,
            on_progress=progress,
            on_failed=lambda job, why: None,
            checkpoints=TrainerCheckpoints(tmp_path / "trainers", every_s=0),
        )

    first = worker()
    first.start()
    assert enough.wait(60)
    first.stop()
    stopped_at = seen[-1]
    seen.clear()
    enough.clear()
    second = worker()
    second.start()
    assert enough.wait(60)
    second.stop()
    assert seen[0] == stopped_at + 1, "one iteration on from the last saved one"
