"""Peers' updates for one task, applied through the task's aggregator (docs/security.md).

The miners of a task publish their updates (Strom-compressed, in their IT_RES). Each miner
collects its peers' as they arrive and, about once a second, moves its model to the
aggregate of everyone's progress since the last time: its own published updates and each
peer's, summed per miner, and combined by the task's defence (`pouw.security.Defence`: the
screen flags, the task's aggregator combines what it kept; by default the robust aggregator,
whose bounds hold whatever the screen misses). ``mean`` is the unprotected average, with no
defence. Its own steps are already in its model, so it adds ``aggregate - own``: a poisoned
update moves honest models only as far as the defence lets it.

The node's event loop adds updates; the training thread takes them between iterations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from pouw.crypto import hash_concat
from pouw.ml.compression import CompressedUpdate

APPLY_EVERY_S = 1.0
"""How often a miner applies its peers' updates: each IT_RES batch covers half a second."""


class Judgement(Protocol):
    @property
    def aggregate(self) -> torch.Tensor: ...

    @property
    def flagged(self) -> tuple[bool, ...]: ...


class Defence(Protocol):
    """What combines a round's per-miner sums: the node gives `pouw.security.Defence`."""

    def aggregate(self, senders: Sequence[bytes], updates: Sequence[torch.Tensor]) -> Judgement: ...


@dataclass(frozen=True)
class AppliedUpdates:
    correction: torch.Tensor
    """What to add to the model's parameters (flattened): aggregate minus own progress."""
    digest: bytes
    """The iteration message's applied_updates_hash: commits to every update applied."""
    miners: int


class PeerUpdates:
    def __init__(
        self,
        own: bytes,
        miners: Sequence[bytes],
        size: int,
        *,
        defence: Defence | None = None,
        quorum: int = 2,
        every_s: float = APPLY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own = own
        self.miners = frozenset(miners)
        """The task's drawn miners (public keys): nobody else's updates count."""
        self.size = size
        self.defence = defence
        """None: the plain mean of every miner's sum (the task's ``mean`` aggregator)."""
        self.quorum = quorum
        """Miners (itself included) whose updates must be in before any is applied: the
        defence judges an update against the others' and cannot judge two; with fewer, an
        attacker's update would go into the average unjudged."""
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sums: dict[bytes, torch.Tensor] = {}
        self._digests: dict[bytes, list[bytes]] = {}
        self._latest: dict[bytes, torch.Tensor] = {}
        self._last_taken = clock()

    def add(self, miner: bytes, update: bytes) -> bool:
        """A miner's published update (its own included); False when it is not one of the
        task's miners or the update does not decode for this model, and so is left out."""
        if miner not in self.miners:
            return False
        try:
            decoded = CompressedUpdate.from_bytes(update, self.size)
        except ValueError:
            return False
        if decoded.size != self.size:
            return False
        dense = decoded.to_dense()
        with self._lock:
            total = self._sums.get(miner)
            self._sums[miner] = dense.clone() if total is None else total.add_(dense)
            self._digests.setdefault(miner, []).append(decoded.digest())
            self._latest[miner] = dense
        return True

    def latest(self) -> dict[bytes, torch.Tensor]:
        """Each peer's most recent update (what a Byzantine miner imitates or bends)."""
        with self._lock:
            return {miner: update for miner, update in self._latest.items() if miner != self.own}

    def take(self) -> AppliedUpdates | None:
        """The correction to apply now, or None when it is not yet time or no peer sent
        anything since the last one."""
        if self.clock() - self._last_taken < self.every_s:
            return None
        with self._lock:
            if not any(miner != self.own for miner in self._sums):
                return None
            if len(self._sums.keys() | {self.own}) < self.quorum:
                return None
            sums, self._sums = self._sums, {}
            digests, self._digests = self._digests, {}
        self._last_taken = self.clock()
        own = sums.setdefault(self.own, torch.zeros(self.size))
        miners = sorted(sums)
        updates = [sums[m] for m in miners]
        if self.defence is None:
            aggregate = torch.stack(updates).mean(dim=0)
        else:
            verdict = self.defence.aggregate(miners, updates)
            aggregate = verdict.aggregate
            miners = [m for m, flag in zip(miners, verdict.flagged, strict=True) if not flag]
        digest = hash_concat(*(d for m in miners for d in digests.get(m, [])))
        return AppliedUpdates(aggregate - own, digest, len(miners))


def apply_correction(parameters: Sequence[torch.nn.Parameter], correction: torch.Tensor) -> None:
    """Add a flat vector to the parameters in place (their numpy views stay valid)."""
    offset = 0
    with torch.no_grad():
        for parameter in parameters:
            count = parameter.numel()
            parameter.add_(correction[offset : offset + count].view_as(parameter))
            offset += count
