"""The runs of `pouw bench attacks`: one job is one seed of one attack (or of none) in one
unit and setting, trained with the defence and without, in a worker process (attacks.py says
what is measured and reports it).

A run trains for a number of rounds. Each round every worker computes its honest update
(`attack_training.Updates`); the attackers (the last f workers) replace theirs; the updates
are combined, by `pouw.security.Defence` as a task's miners do by default (protected), or by
the plain mean (unprotected), and the model moves by the result.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from pouw.bench.attack_training import SPEC, Federation, Setting, Updates
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import configure_determinism
from pouw.security.adaptive import adaptive_update
from pouw.security.attacks import ADAPTIVE_ATTACKS, STALE_ROUNDS, TRAINER_ATTACKS, attack_update
from pouw.security.defence import Defence

SETTINGS = (Setting(7, 2), Setting(10, 3))
ROUNDS = {"gradients": 300, "sums": 75}
"""Rounds per unit: 300 steps of every worker either way (sums: LOCAL_STEPS a round)."""
SEEDS = 3
SEED_BASE = 100
"""The bench's seeds start here: the screen's thresholds were chosen on seeds 0-2."""
PROCESSES = 2
Mode = Literal["defence", "mean", "honest_only"]


@dataclass
class Flags:
    attacker_updates: int = 0
    attacker_flagged: int = 0
    honest_updates: int = 0
    honest_flagged: int = 0

    def count(self, workers: Sequence[int], flags: Sequence[bool], attacking: set[int]) -> None:
        for worker, flagged in zip(workers, flags, strict=True):
            if worker in attacking:
                self.attacker_updates += 1
                self.attacker_flagged += flagged
            else:
                self.honest_updates += 1
                self.honest_flagged += flagged


@dataclass
class Run:
    accuracy: float = 0.0
    flags: Flags = field(default_factory=Flags)


@dataclass(frozen=True)
class Job:
    kind: str | None
    unit: str
    setting: Setting
    seed: int
    rounds: int


@dataclass(frozen=True)
class Outcome:
    job: Job
    protected: Run
    unprotected: Run
    honest_only: Run | None = None
    """Only in the honest job: the f attackers' workers left out, the plain mean of the rest."""


def train(federation: Federation, job: Job, mode: Mode) -> Run:
    """`job`'s training, its updates combined as `mode` says."""
    setting, attack = job.setting, job.kind
    source = Updates(federation, job.unit)
    generator = torch.Generator().manual_seed(job.seed)
    parameters = federation.initial.clone()
    history: deque[torch.Tensor] = deque(maxlen=max(1, STALE_ROUNDS // source.steps_per_round) + 1)
    defence = Defence(federation.size, setting.byzantine) if mode == "defence" else None
    attacking = set(setting.attackers) if attack is not None else set()
    flipped = frozenset(attacking) if attack == "label_flip" else frozenset()
    run = Run()
    for round_ in range(job.rounds):
        history.append(parameters)
        starts = parameters.expand(setting.workers, -1).clone()
        if attack == "stale_model":
            for worker in attacking:
                starts[worker] = history[0]
        honest = source.round(starts, round_, flipped)
        updates = _attacked(attack, list(honest), attacking, setting, generator, defence)
        workers = list(range(setting.workers))
        if mode == "honest_only" or attack == "fake_work":
            workers = [w for w in workers if w not in setting.attackers]
        kept = [updates[w] for w in workers]
        if defence is None:
            aggregate = torch.stack(kept).mean(dim=0)
        else:
            verdict = defence.aggregate(workers, kept)
            run.flags.count(workers, verdict.flagged, attacking)
            aggregate = verdict.aggregate
        parameters = parameters + aggregate
    run.accuracy = federation.accuracy(parameters)
    return run


def _attacked(
    attack: str | None,
    honest: list[torch.Tensor],
    attacking: set[int],
    setting: Setting,
    generator: torch.Generator,
    defence: Defence | None,
) -> list[torch.Tensor]:
    """The round's updates as sent: the attackers' replaced."""
    if attack is None or attack in TRAINER_ATTACKS:
        return honest
    updates = list(honest)
    if attack in ADAPTIVE_ATTACKS:
        peers = [u for w, u in enumerate(honest) if w not in attacking]
        workers = list(range(setting.workers))

        def probe(update: torch.Tensor) -> tuple[torch.Tensor, bool]:
            trial = [update if w in attacking else u for w, u in enumerate(honest)]
            if defence is None:
                return torch.stack(trial).mean(dim=0), False
            verdict = defence.probe(workers, trial, fresh=attack.endswith("_fresh"))
            return verdict.aggregate, any(verdict.flagged[w] for w in attacking)

        chosen = adaptive_update(attack, peers, probe)
        for worker in attacking:
            updates[worker] = chosen
        return updates
    for worker in sorted(attacking):
        updates[worker] = attack_update(
            attack,
            honest[worker],
            peers=honest,
            generator=generator,
            workers=setting.workers,
            byzantine=setting.byzantine,
        )
    return updates


_federations: dict[tuple[int, int], Federation] = {}


def _federation(workers: int, seed: int) -> Federation:
    federation = _federations.get((workers, seed))
    if federation is None:
        configure_determinism()
        federation = Federation(load_dataset(SPEC.dataset), workers, seed)
        _federations[(workers, seed)] = federation
    return federation


def run_job(job: Job) -> Outcome:
    """One seed of one attack kind (None: no attack), in a worker process."""
    federation = _federation(job.setting.workers, job.seed)
    protected = train(federation, job, "defence")
    unprotected = train(federation, job, "mean")
    if job.kind is None:
        return Outcome(job, protected, unprotected, train(federation, job, "honest_only"))
    return Outcome(job, protected, unprotected)
