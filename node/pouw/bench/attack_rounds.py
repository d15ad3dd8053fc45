"""The training core of `pouw bench attacks`: MINERS miners (the last BYZANTINE of them
attackers) train the digits MLP in synchronous rounds, each round's updates screened and
aggregated as a miner applies its peers' updates; one job is one seed of one attack, run in a
worker process. attacks.py says what is measured and reports it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pouw.crypto import sha256
from pouw.ml.aggregation import UNSCREENED, make_aggregator
from pouw.ml.datasets import Dataset, epoch_order, load_dataset, shard_indices
from pouw.ml.iteration import configure_determinism, evaluate
from pouw.ml.models import build_model
from pouw.security.attacks import STALE_ROUNDS, attack_update
from pouw.security.detection import ScreenedAggregator, UpdateScreen
from pouw.spec import DEFAULT_AGGREGATOR, DatasetSpec, ModelSpec, TaskSpec

MINERS = 7
BYZANTINE = 2
ROUNDS = 300
SEEDS = 3
AGGREGATOR: Final = DEFAULT_AGGREGATOR
SPEC = TaskSpec(
    model=ModelSpec(layers=(64, 128, 64, 10)),
    dataset=DatasetSpec(name="digits"),
    batch_size=64,
    learning_rate=0.2,
    epochs=1,
    miners=MINERS,
    aggregator=AGGREGATOR,
)
SEED_BASE = 100
"""The bench's seeds start here: the screens' thresholds were chosen on seeds 0-2."""
ALTERNATIVE = "krum"
"""A robust aggregator measured beside the task's default, behind the same screen."""
ATTACKERS = tuple(range(MINERS - BYZANTINE, MINERS))
PROCESSES = 2


@dataclass
class Flags:
    attacker_updates: int = 0
    attacker_flagged: int = 0
    honest_updates: int = 0
    honest_flagged: int = 0

    def count(self, flags: Sequence[bool], attacking: set[int]) -> None:
        for worker, flagged in enumerate(flags):
            if worker in attacking:
                self.attacker_updates += 1
                self.attacker_flagged += flagged
            else:
                self.honest_updates += 1
                self.honest_flagged += flagged


@dataclass
class Run:
    accuracy: float = 0.0
    per_round: Flags = field(default_factory=Flags)
    per_sender: Flags = field(default_factory=Flags)


class Federation:
    """One seed's task: a model, the digits shards, and synchronous rounds of training."""

    def __init__(self, spec: TaskSpec, dataset: Dataset, seed: int) -> None:
        self.spec = spec
        self.dataset = dataset
        self.task_seed = sha256(f"pouw-bench-attacks-{seed}".encode())
        self.model = build_model(spec.model, seed=self.task_seed)
        self.initial = nn.utils.parameters_to_vector(self.model.parameters()).detach().clone()
        self.shapes = [(name, p.shape) for name, p in self.model.named_parameters()]
        self.shards = [
            shard_indices(len(dataset.y_train), index, spec.miners) for index in range(spec.miners)
        ]
        self.generator_seed = seed

    def _batch(self, worker: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full batches read from the worker's shard in the task's epoch order (each epoch's
        shuffle from the task seed), running on into the next epoch instead of a short tail
        batch, so every round's gradients average the same number of rows."""
        shard, size = self.shards[worker], self.spec.batch_size
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

    def gradients(self, parameters: torch.Tensor, step: int) -> torch.Tensor:
        """Row w: worker w's gradient at parameters[w] on its batch of round `step`, all
        workers in one vectorised call."""
        batches = [self._batch(worker, step) for worker in range(len(parameters))]
        xs = torch.stack([x for x, _ in batches])
        ys = torch.stack([y for _, y in batches])
        grads: torch.Tensor = torch.func.vmap(torch.func.grad(self._loss))(parameters, xs, ys)
        return grads

    def accuracy(self, parameters: torch.Tensor) -> float:
        nn.utils.vector_to_parameters(parameters, self.model.parameters())
        return evaluate(self.model, self.dataset.x_test, self.dataset.y_test)

    def train(
        self,
        rounds: int,
        aggregation: str,
        attack: str | None = None,
        *,
        watch: bool = False,
        drop_attackers: bool = False,
    ) -> Run:
        """Train for `rounds` rounds with the aggregator named `aggregation`. As a miner
        applies its peers' updates (`pouw.mining.peers`), every aggregator but UNSCREENED
        runs behind `SenderScreen`: flagged updates are left out, and both screens' flags are
        counted. `watch` counts the flags of an unscreened run without acting on them.
        `drop_attackers` leaves the attackers' updates out (their blocks were rejected)."""
        generator = torch.Generator().manual_seed(self.generator_seed)
        parameters = self.initial.clone()
        history: deque[torch.Tensor] = deque(maxlen=STALE_ROUNDS + 1)
        run = Run()
        screening = aggregation != UNSCREENED
        round_screen = UpdateScreen()
        screened = ScreenedAggregator(aggregator=make_aggregator(aggregation, BYZANTINE))
        attacking = set(ATTACKERS) if attack is not None else set()
        for step in range(rounds):
            history.append(parameters)
            starts = parameters.expand(MINERS, -1).clone()
            if attack == "stale_model":
                for worker in attacking:
                    starts[worker] = history[0]
            honest = list(self.gradients(starts, step))
            updates = list(honest)
            if attack not in (None, "stale_model"):
                for worker in sorted(attacking):
                    updates[worker] = attack_update(
                        attack or "",
                        honest[worker],
                        peers=honest,
                        generator=generator,
                        workers=MINERS,
                        byzantine=len(attacking),
                    )
            if drop_attackers:
                updates = [u for worker, u in enumerate(updates) if worker not in attacking]
            flags = [False] * len(updates)
            if screening or watch:
                scores = round_screen.scores(updates)
                run.per_round.count([score.suspicious for score in scores], attacking)
                flags = screened.screen.observe(range(len(updates)), scores)
                run.per_sender.count(flags, attacking)
            update = screened.combine(updates, flags if screening else [False] * len(updates))
            parameters = parameters - self.spec.learning_rate * update
        run.accuracy = self.accuracy(parameters)
        return run


_federations: dict[int, Federation] = {}


def _federation(seed: int) -> Federation:
    federation = _federations.get(seed)
    if federation is None:
        configure_determinism()
        federation = _federations[seed] = Federation(SPEC, load_dataset(SPEC.dataset), seed)
    return federation


@dataclass(frozen=True)
class Job:
    kind: str | None
    seed: int
    rounds: int
    aggregator: str


@dataclass(frozen=True)
class Outcome:
    job: Job
    byzantine: Run
    unprotected: Run | None = None
    alternative: Run | None = None


def run_job(job: Job) -> Outcome:
    """One seed of one attack kind (None: the honest baseline), in a worker process."""
    federation = _federation(job.seed)
    if job.kind is None:
        return Outcome(job, federation.train(job.rounds, UNSCREENED, watch=True))
    unprotected = federation.train(job.rounds, UNSCREENED, job.kind)
    if job.kind == "fake_work":
        # Re-execution rejects the forged blocks, so their updates never count.
        dropped = federation.train(job.rounds, UNSCREENED, job.kind, drop_attackers=True)
        return Outcome(job, dropped, unprotected)
    byzantine = federation.train(job.rounds, job.aggregator, job.kind)
    alternative = federation.train(job.rounds, ALTERNATIVE, job.kind)
    return Outcome(job, byzantine, unprotected, alternative)
