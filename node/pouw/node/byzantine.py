"""A Byzantine miner, for devnets and tests only (POUW_ATTACK; refused off devnet chains).

It trains honestly, so its own model and its blocks are real work, but publishes what
`pouw.security.attack_update` makes of its work:

- sign_flip, scale, noise, little_is_enough, ipm, mimic: each iteration's published update,
  attacked (against its peers' latest updates) and re-encoded as one compressed update
  (`encode_dense`);
- adaptive_*: the same, at the strength its own copy of the task's defence lets through
  furthest (`pouw.security.adaptive`: its peers' latest updates and its own in the probe);
- stale_model: updates computed from its model of STALE_ROUNDS iterations ago (the batch is
  the current one);
- label_flip: updates computed on the batch with its labels flipped;
- fake_work: it claims work it did not do: the gradient sample of its iteration messages (so
  of the blocks it mines) and its update are random vectors of the honest norm. A verifier's
  re-execution rejects such a block, and the signed IT_RES is slashing evidence.

Only client tasks are attacked: the bootstrap task only keeps the chain going.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable

import msgspec
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pouw.blockchain.iteration_message import IterationMessage
from pouw.crypto import sha256
from pouw.mining.trainer import TaskTrainer
from pouw.ml.compression import CompressedUpdate
from pouw.ml.models import state_snapshot
from pouw.security import ADAPTIVE_ATTACKS, ATTACKS, attack_update
from pouw.security.adaptive import adaptive_update
from pouw.security.attacks import STALE_ROUNDS, TRAINER_ATTACKS, flip_labels
from pouw.security.defence import Defence


class ByzantineMiner:
    """The `Tampering` of a miner that attacks with `kind` (one of pouw.security.ATTACKS)."""

    def __init__(self, kind: str, attacks: Callable[[bytes], bool], seed: bytes) -> None:
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r}: one of {', '.join(ATTACKS)}")
        self.kind = kind
        self.attacks = attacks
        """Whether to attack the task with this id."""
        # One generator per thread that draws from it: training and pipeline.
        self._message_noise = _generator(seed + b":message")
        self._update_noise = _generator(seed + b":update")
        self._stale: dict[bytes, _StaleModel] = {}

    def message(self, trainer: TaskTrainer, message: IterationMessage) -> IterationMessage:
        if self.kind != "fake_work" or not self.attacks(trainer.task_id):
            return message
        honest = torch.from_numpy(np.frombuffer(message.grad_sample, dtype="<f4").copy())
        fake = attack_update("fake_work", honest, generator=self._message_noise)
        return msgspec.structs.replace(message, grad_sample=fake.numpy().astype("<f4").tobytes())

    def gradients(
        self, trainer: TaskTrainer, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        if self.kind not in TRAINER_ATTACKS or not self.attacks(trainer.task_id):
            return grads
        if self.kind == "label_flip":
            return _gradients(trainer.model, x, flip_labels(y, trainer.dataset.num_classes))
        stale = self._stale.get(trainer.task_id)
        if stale is None:
            stale = self._stale[trainer.task_id] = _StaleModel(trainer.model, STALE_ROUNDS)
        return stale.gradients(trainer.model, x, y)

    def update(self, trainer: TaskTrainer, update: CompressedUpdate) -> CompressedUpdate:
        if self.kind in TRAINER_ATTACKS or not self.attacks(trainer.task_id):
            return update
        latest = trainer.peers.latest() if trainer.peers is not None else {}
        honest = update.to_dense()
        if self.kind in ADAPTIVE_ATTACKS:
            attacked = self._adaptive(trainer, honest, latest)
        else:
            attacked = attack_update(
                self.kind,
                honest,
                peers=list(latest.values()),
                generator=self._update_noise,
                workers=trainer.workers,
            )
        return encode_dense(attacked, max(1, update.nnz))

    def _adaptive(
        self, trainer: TaskTrainer, honest: torch.Tensor, latest: dict[bytes, torch.Tensor]
    ) -> torch.Tensor:
        peers = trainer.peers
        defence = peers.defence if peers is not None else None
        if peers is None or not isinstance(defence, Defence) or not latest:
            return honest
        senders = [*latest, peers.own]
        fresh = self.kind.endswith("_fresh")

        def probe(candidate: torch.Tensor) -> tuple[torch.Tensor, bool]:
            verdict = defence.probe(senders, [*latest.values(), candidate], fresh=fresh)
            return verdict.aggregate, verdict.flagged[-1]

        return adaptive_update(self.kind, list(latest.values()), probe)


def encode_dense(vector: torch.Tensor, entries: int) -> CompressedUpdate:
    """`vector` as one compressed update: the signs of its `entries` largest coordinates at
    the magnitude that keeps its L2 norm (exact for a flipped or scaled Strom update)."""
    nonzero = int(torch.count_nonzero(vector))
    norm = float(vector.norm())
    count = min(entries, nonzero)
    if count == 0 or not math.isfinite(norm):
        empty = torch.empty(0, dtype=torch.int64)
        return CompressedUpdate(len(vector), 0.0, empty, empty.to(torch.int8))
    indices = vector.abs().topk(count).indices.sort().values
    signs = vector[indices].sign().to(torch.int8)
    return CompressedUpdate(len(vector), norm / math.sqrt(count), indices, signs)


class _StaleModel:
    """A copy of the model that lags `rounds` iterations behind and is re-run on the current
    batch: the gradient a lazy miner replaying old work would publish."""

    def __init__(self, model: nn.Module, rounds: int) -> None:
        self.model = copy.deepcopy(model)
        self.history: deque[dict[str, torch.Tensor]] = deque(maxlen=rounds)

    def gradients(self, current: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        self.history.append(state_snapshot(current))
        self.model.load_state_dict(self.history[0])
        return _gradients(self.model, x, y)


def _gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The model's gradients on (x, y), its own left as they were."""
    parameters = list(model.parameters())
    saved = [parameter.grad for parameter in parameters]
    for parameter in parameters:
        parameter.grad = None
    F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    for parameter, grad in zip(parameters, saved, strict=True):
        parameter.grad = grad
    return grads


def _generator(seed: bytes) -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(sha256(seed)[:8], "big") >> 1)
