"""The federation `pouw bench attacks` trains: n workers on the digits MLP, each on its shard,
and the two units a round's updates come in (attacks.py says what is measured).

- ``gradients``: every worker's update is one minibatch step, ``-lr * gradient`` at the
  shared model (data-parallel SGD, as the literature measures robust aggregation).
- ``sums``: what the live protocol aggregates (`pouw.mining.peers`): every worker trains
  LOCAL_STEPS iterations from the shared model and sends the sum of its Strom-compressed
  steps (`pouw.ml.compression`, tau TAU, residuals kept across rounds). Every honest miner
  then moves to the shared model plus the aggregate.

In both, the model takes the aggregate as it is: ``model + aggregate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pouw.crypto import sha256
from pouw.ml.compression import StromCompressor
from pouw.ml.datasets import Dataset, epoch_order, shard_indices
from pouw.ml.iteration import evaluate
from pouw.ml.models import build_model
from pouw.security.attacks import flip_labels
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

UNITS = ("gradients", "sums")
LOCAL_STEPS = 8
TAU = 1e-3
SPEC = TaskSpec(
    model=ModelSpec(layers=(64, 128, 64, 10)),
    dataset=DatasetSpec(name="digits"),
    batch_size=64,
    learning_rate=0.2,
    epochs=1,
)


@dataclass(frozen=True)
class Setting:
    workers: int
    byzantine: int

    @property
    def attackers(self) -> tuple[int, ...]:
        """The last `byzantine` workers."""
        return tuple(range(self.workers - self.byzantine, self.workers))

    @property
    def name(self) -> str:
        return f"n{self.workers}_f{self.byzantine}"


class Federation:
    """One seed's task: a model, the digits shards of `workers` workers, and their steps."""

    def __init__(self, dataset: Dataset, workers: int, seed: int) -> None:
        self.dataset = dataset
        self.workers = workers
        self.task_seed = sha256(f"pouw-bench-attacks-{seed}".encode())
        self.model = build_model(SPEC.model, seed=self.task_seed)
        self.initial = nn.utils.parameters_to_vector(self.model.parameters()).detach().clone()
        self.size = len(self.initial)
        self.shapes = [(name, p.shape) for name, p in self.model.named_parameters()]
        self.shards = [shard_indices(len(dataset.y_train), w, workers) for w in range(workers)]

    def _batch(self, worker: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full batches read from the worker's shard in the task's epoch order (each epoch's
        shuffle from the task seed), running on into the next epoch instead of a short tail
        batch, so every step averages the same number of rows."""
        shard, size = self.shards[worker], SPEC.batch_size
        start = step * size
        parts, taken = [], 0
        while taken < size:
            epoch, offset = divmod(start + taken, len(shard))
            part = epoch_order(shard, epoch, self.task_seed)[offset : offset + size - taken]
            parts.append(part)
            taken += len(part)
        rows = torch.cat(parts)
        return self.dataset.x_train[rows], self.dataset.y_train[rows]

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        parameters, offset = {}, 0
        for name, shape in self.shapes:
            size = shape.numel()
            parameters[name] = flat[offset : offset + size].view(shape)
            offset += size
        return F.cross_entropy(torch.func.functional_call(self.model, parameters, (x,)), y)

    def steps(self, parameters: torch.Tensor, step: int, flipped: frozenset[int]) -> torch.Tensor:
        """Row w: worker w's SGD step ``-lr * gradient`` at parameters[w] on its batch number
        `step` (labels flipped for the workers in `flipped`), all in one vectorised call."""
        batches = [self._batch(worker, step) for worker in range(len(parameters))]
        xs = torch.stack([x for x, _ in batches])
        ys = torch.stack(
            [
                flip_labels(y, self.dataset.num_classes) if worker in flipped else y
                for worker, (_, y) in enumerate(batches)
            ]
        )
        grads: torch.Tensor = torch.func.vmap(torch.func.grad(self._loss))(parameters, xs, ys)
        return -SPEC.learning_rate * grads

    def accuracy(self, parameters: torch.Tensor) -> float:
        nn.utils.vector_to_parameters(parameters, self.model.parameters())
        return evaluate(self.model, self.dataset.x_test, self.dataset.y_test)


class Updates:
    """Each worker's honest update of a round in one unit, from each worker's start model."""

    def __init__(self, federation: Federation, unit: str) -> None:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}: one of {', '.join(UNITS)}")
        self.federation = federation
        self.unit = unit
        size = federation.size
        self.compressors = [StromCompressor(size, TAU) for _ in range(federation.workers)]

    @property
    def steps_per_round(self) -> int:
        return 1 if self.unit == "gradients" else LOCAL_STEPS

    def round(self, starts: torch.Tensor, round_: int, flipped: frozenset[int]) -> torch.Tensor:
        """Row w: worker w's update for round `round_` starting from starts[w]."""
        federation = self.federation
        if self.unit == "gradients":
            return federation.steps(starts, round_, flipped)
        models = starts.clone()
        sums = torch.zeros_like(starts)
        for local in range(LOCAL_STEPS):
            steps = federation.steps(models, round_ * LOCAL_STEPS + local, flipped)
            models += steps
            for worker, compressor in enumerate(self.compressors):
                sums[worker] += compressor.compress(steps[worker]).to_dense()
        return sums
