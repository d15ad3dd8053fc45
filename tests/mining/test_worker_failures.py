"""A task that cannot train ends as a failed job, never as a dead mining thread: the worker
reports why, does not start that task again, and goes on mining with other work."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.mining.conftest import TINY

from pouw.bench.mining import MiningRig
from pouw.crypto import sha256
from pouw.mining.miner import MiningStats
from pouw.mining.trainer import TaskTrainer
from pouw.ml.datasets import DatasetSource, load_dataset
from pouw.ml.iteration import configure_determinism
from pouw.node.worker import Job, MiningWorker
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec, check_task_spec

DEADLINE_S = 60.0


@pytest.fixture
def rig(tmp_path: Path) -> MiningRig:
    configure_determinism()
    return MiningRig(TINY, tmp_path / "chain", difficulty=1 << 20)


def lying_file(directory: Path) -> TaskSpec:
    """A file whose spec declares 4 features and 3 classes, so the static check passes, while
    the file holds 5 features: only loading it can tell."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    np.savez(directory / "cells.npz", x=rng.normal(size=(60, 5)), y=np.repeat([0, 1, 2], 20))
    digest = hashlib.sha256((directory / "cells.npz").read_bytes()).hexdigest()
    dataset = DatasetSpec(
        name="cells.npz", format="npz", sha256=digest, rows=60, features=4, classes=3
    )
    spec = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=dataset, epochs=2, miners=1)
    check_task_spec(spec)
    return spec


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


IRIS_64_10 = TaskSpec(
    model=ModelSpec(layers=(64, 10)), dataset=DatasetSpec(name="iris"), epochs=2, miners=1
)
"""A spec that skipped the static check (an older node's chain, say): it raises in forward."""


@pytest.mark.parametrize(
    ("failing", "reason"),
    [
        ("file", "dataset refused: dataset 'cells.npz' declares features=4 but the file has 5"),
        ("shapes", "training failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ],
)
def test_a_task_that_fails_in_training_leaves_the_miner_mining_other_work(
    rig: MiningRig, tmp_path: Path, failing: str, reason: str
) -> None:
    datasets = tmp_path / "datasets"
    spec = lying_file(datasets) if failing == "file" else IRIS_64_10
    bad = Job(sha256(b"unrunnable"), spec, worker_index=0, workers=1, client_task=True)
    good = Job(rig.task_id, TINY, worker_index=0, workers=1, client_task=False)
    job = [bad]
    failures: list[tuple[Job, str]] = []
    failed, trained = threading.Event(), threading.Event()
    trained_tasks: set[bytes] = set()

    def on_failed(job: Job, why: str) -> None:
        failures.append((job, why))
        failed.set()

    def progress(job: Job, trainer: TaskTrainer, stats: MiningStats) -> None:
        trained_tasks.add(job.task_id)
        if job == good and trainer.completed_iterations >= 5:
            trained.set()

    worker = MiningWorker(
        rig.miner(),
        rig.miner_key.public_key,
        lambda: job[0],
        on_finished=lambda done: None,
        on_progress=progress,
        on_failed=on_failed,
        datasets=lambda dataset: load_dataset(dataset, DatasetSource(datasets)),
    )
    worker.start()
    try:
        assert failed.wait(DEADLINE_S)
        # The node has not changed the job yet: the worker idles instead of starting it again.
        assert wait_for(lambda: worker.current is None)
        assert worker.running and len(failures) == 1
        job[0] = good
        worker.wake()
        assert trained.wait(DEADLINE_S), "the miner trains its other work"
    finally:
        worker.stop()
    ((failed_job, why),) = failures
    assert failed_job == bad and why.startswith(reason)
    assert trained_tasks == {good.task_id}
