"""The mining worker: a thread that always trains something, and so always mines.

It trains the client task this node was drawn for, if any, else the chain's bootstrap task
(a node with neither has nothing to mine with and says so in its status). The node, on its
event loop, decides the job; the worker switches at the next iteration when the job changes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pouw.mining.checkpoint import TrainerCheckpoints
from pouw.mining.miner import Miner, MinerPipelineError, MiningStats, TrainingDiverged
from pouw.mining.peers import PeerUpdates
from pouw.mining.trainer import TaskTrainer
from pouw.ml.datasets import Dataset, DatasetError, load_dataset
from pouw.spec import DatasetSpec, TaskSpec

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 256


@dataclass(frozen=True)
class Job:
    task_id: bytes
    spec: TaskSpec
    worker_index: int
    workers: int
    client_task: bool
    peers: PeerUpdates | None = field(default=None, compare=False)
    """Where the node puts the task's peers' updates for the trainer."""


@dataclass(frozen=True)
class FinishedTraining:
    job: Job
    trainer: TaskTrainer


class MiningWorker:
    def __init__(
        self,
        miner: Miner,
        miner_key: bytes,
        next_job: Callable[[], Job | None],
        *,
        on_finished: Callable[[FinishedTraining], None],
        on_progress: Callable[[Job, TaskTrainer, MiningStats], None],
        on_failed: Callable[[Job, str], None],
        checkpoints: TrainerCheckpoints | None = None,
        sealed_up_to: Callable[[Job], int | None] = lambda job: None,
        datasets: Callable[[DatasetSpec], Dataset] = load_dataset,
    ) -> None:
        self.miner = miner
        self.miner_key = miner_key
        self.next_job = next_job
        self.on_finished = on_finished
        self.on_progress = on_progress
        self.on_failed = on_failed
        self.checkpoints = checkpoints
        """Where client tasks' trainers are saved, to resume after a restart (None: never)."""
        self.sealed_up_to = sealed_up_to
        """The last position the node's ticket sealed on the job's task on the main chain."""
        self.datasets = datasets
        self.current: Job | None = None
        self._failed: set[bytes] = set()
        """Tasks whose training failed here: never started again by this thread."""
        self._stopping = threading.Event()
        self._trainers: dict[bytes, TaskTrainer] = {}
        self._thread = threading.Thread(target=self._run, name="pouw-mining-worker", daemon=True)
        self._idle = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._idle.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        """The job may have changed (a new block, a new assignment)."""
        self._idle.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self.next_job()
            if job is None or job.task_id in self._failed:
                self.current = None
                self._idle.wait(1.0)
                self._idle.clear()
                continue
            self.current = job
            self._train(job)

    def _train(self, job: Job) -> None:
        """Train `job` until it finishes or changes; any failure ends the job, not the thread."""
        try:
            trainer = self._trainer_for(job)
            self._train_with(job, trainer)
        except Exception as error:
            why = failure_reason(error)
            log.warning("task %s failed: %s", job.task_id.hex()[:16], why)
            self._failed.add(job.task_id)
            with contextlib.suppress(OSError):
                self._forget(job)
            self.on_failed(job, why)

    def _train_with(self, job: Job, trainer: TaskTrainer) -> None:
        switch = threading.Event()

        def progress(stats: MiningStats) -> None:
            self.on_progress(job, trainer, stats)
            if self.checkpoints is not None and job.client_task:
                self.checkpoints.save_if_due(trainer)
            if self._stopping.is_set() or self.next_job() != job:
                switch.set()

        self.miner.train(trainer, stop=switch, progress=progress)
        if trainer.finished:
            self._forget(job)
            self.on_finished(FinishedTraining(job, trainer))

    def _forget(self, job: Job) -> None:
        self._trainers.pop(job.task_id, None)
        if self.checkpoints is not None:
            self.checkpoints.discard(job.task_id)

    def _trainer_for(self, job: Job) -> TaskTrainer:
        trainer = self._trainers.get(job.task_id)
        if trainer is None:
            trainer = TaskTrainer(
                job.task_id,
                job.spec,
                self.datasets(job.spec.dataset),
                self.miner_key,
                worker_index=job.worker_index,
                workers=job.workers,
                peers=job.peers,
                checkpoint_interval=self.miner.params.checkpoint_interval,
            )
            if (
                self.checkpoints is not None
                and job.client_task
                and self.checkpoints.restore(trainer)
            ):
                log.info(
                    "task %s: resumed at epoch %d, iteration %d",
                    job.task_id.hex()[:16],
                    trainer.epoch,
                    trainer.iteration,
                )
            sealed = self.sealed_up_to(job)
            if not job.client_task and sealed is not None:
                # The bootstrap task keeps no checkpoint: a restarted node resumes after the
                # positions it sealed before, at a fresh segment (docs/protocol.md, 6.8).
                trainer.skip_past(sealed)
            self._trainers[job.task_id] = trainer
        return trainer


FAILURE_PREFIXES = {
    "dataset": "dataset refused: ",
    "diverged": "training diverged: ",
    "error": "training failed: ",
}
"""How a job's failure reason starts, by kind (`pouw_training_failures_total{kind}`)."""


def failure_kind(why: str) -> str:
    """The kind of a reason `failure_reason` wrote ("error" for any other)."""
    return next((k for k, prefix in FAILURE_PREFIXES.items() if why.startswith(prefix)), "error")


def failure_reason(error: Exception) -> str:
    """Why a job failed, as the task's status says it (one line, bounded)."""
    cause = error.__cause__ if isinstance(error, MinerPipelineError) else None
    if isinstance(cause, Exception):
        error = cause
    if isinstance(error, TrainingDiverged):
        why = f"{FAILURE_PREFIXES['diverged']}{error}"
    elif isinstance(error, DatasetError):
        why = f"{FAILURE_PREFIXES['dataset']}{error}"
    else:
        why = f"{FAILURE_PREFIXES['error']}{type(error).__name__}: {error}"
    line = " ".join(why.split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."
