"""A miner's training state for one task: its model, optimizer, data shard and position."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pouw.blockchain.iteration_message import initial_commitment
from pouw.mining.peers import PeerUpdates
from pouw.mining.segments import Segment
from pouw.ml.datasets import (
    Dataset,
    batch_hash,
    batch_indices,
    batches_per_epoch,
    epoch_order,
    shard_indices,
)
from pouw.ml.iteration import ModelFingerprint, make_optimizer
from pouw.ml.models import build_model, parameter_count
from pouw.spec import TaskSpec


@dataclass(frozen=True)
class _EpochData:
    """An epoch's shuffled shard and its batch hashes, taken while the rows are in cache."""

    epoch: int
    x: torch.Tensor
    y: torch.Tensor
    hashes: list[bytes]

    @classmethod
    def build(cls, trainer: TaskTrainer, epoch: int) -> _EpochData:
        order = epoch_order(trainer.shard, epoch, seed=trainer.task_id)
        x, y = trainer.dataset.x_train[order], trainer.dataset.y_train[order]
        size = trainer.spec.batch_size
        hashes = [
            batch_hash(x[start : start + size], y[start : start + size])
            for start in range(0, trainer.batches_per_epoch * size, size)
        ]
        return cls(epoch, x, y, hashes)


class TaskTrainer:
    def __init__(
        self,
        task_id: bytes,
        spec: TaskSpec,
        dataset: Dataset,
        miner: bytes,
        worker_index: int = 0,
        workers: int = 1,
        peers: PeerUpdates | None = None,
        *,
        checkpoint_interval: int = 16,
    ) -> None:
        self.task_id = task_id
        self.spec = spec
        self.dataset = dataset
        self.worker_index = worker_index
        self.workers = workers
        self.peers = peers
        """Where its peers' updates arrive (None: no peers, e.g. the bootstrap task)."""
        self.model = build_model(spec.model, seed=task_id)
        self.model_size = parameter_count(self.model)
        self.optimizer = make_optimizer(spec.optimizer, self.model, spec.learning_rate)
        self.shard = shard_indices(len(dataset.y_train), worker_index, workers)
        self.batches_per_epoch = batches_per_epoch(len(self.shard), spec.batch_size)
        self.epoch = 0
        self.iteration = 0
        self.commitment = initial_commitment(task_id, miner)
        self.fingerprint = ModelFingerprint(self.model)
        self.checkpoint_interval = checkpoint_interval
        self.segment: Segment | None = None
        """The current segment's checkpoint and its hash (`pouw.mining.segments`); None after
        resuming inside a segment, whose start is gone: such a segment seals nothing."""
        self._epoch_data: _EpochData | None = None

    @property
    def at_segment_start(self) -> bool:
        return self.iteration % self.checkpoint_interval == 0

    def start_segment(self) -> None:
        """Take the checkpoint this segment's iterations re-execute from."""
        self.segment = Segment(self.model, self.optimizer)

    def step(self) -> None:
        """The optimizer's step, once the segment's checkpoint is taken."""
        if self.segment is not None:
            self.segment.taken()
        self.optimizer.step()

    @property
    def finished(self) -> bool:
        return self.epoch >= self.spec.epochs

    @property
    def total_iterations(self) -> int:
        return self.batches_per_epoch * self.spec.epochs

    @property
    def completed_iterations(self) -> int:
        return self.epoch * self.batches_per_epoch + self.iteration

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, bytes]:
        x, y = self.batch_tensors()
        return x, y, self._epoch().hashes[self.iteration]

    def batch_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This iteration's batch: the rows `task_batch` selects, read as a contiguous slice
        of the epoch's shuffled shard, which is materialised once per epoch."""
        epoch = self._epoch()
        size = self.spec.batch_size
        rows = slice(self.iteration * size, (self.iteration + 1) * size)
        return epoch.x[rows], epoch.y[rows]

    def _epoch(self) -> _EpochData:
        if self._epoch_data is None or self._epoch_data.epoch != self.epoch:
            self._epoch_data = _EpochData.build(self, self.epoch)
        return self._epoch_data

    def resume(self, epoch: int, iteration: int, commitment: bytes) -> None:
        """Continue from a saved position (`pouw.mining.checkpoint`)."""
        self.epoch, self.iteration, self.commitment = epoch, iteration, commitment
        self.segment = None

    def skip_past(self, sealed: int) -> None:
        """Move to the first segment start after position `sealed` (`epoch << 32 | iteration`),
        keeping the model: a new segment, whose checkpoint is the model as it is."""
        epoch, iteration = sealed >> 32, sealed & 0xFFFFFFFF
        if (epoch, iteration) < (self.epoch, self.iteration):
            return
        start = iteration - iteration % self.checkpoint_interval + self.checkpoint_interval
        if start >= self.batches_per_epoch:
            epoch, start = epoch + 1, 0
        self.epoch, self.iteration, self.segment = epoch, start, None

    def advance(self, commitment: bytes) -> None:
        self.commitment = commitment
        self.iteration += 1
        if self.iteration == self.batches_per_epoch:
            self.iteration = 0
            self.epoch += 1


def task_batch(
    dataset: Dataset,
    spec: TaskSpec,
    task_id: bytes,
    shard: torch.Tensor,
    epoch: int,
    iteration: int,
) -> tuple[torch.Tensor, torch.Tensor, bytes]:
    """The batch a miner trains on at (epoch, iteration): anyone can rebuild it from the spec."""
    indices = batch_indices(shard, spec.batch_size, epoch, iteration, seed=task_id)
    x, y = dataset.x_train[indices], dataset.y_train[indices]
    return x, y, batch_hash(x, y)
