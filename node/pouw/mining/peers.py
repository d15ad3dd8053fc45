"""Peers' updates for one task, applied through the task's aggregator (docs/security.md).

The miners of a task publish their updates (Strom-compressed, in their IT_RES). Each miner
collects its peers' as they arrive and, about once a second, moves its model to the
aggregate of everyone's progress since the last time: its own published updates and each
peer's, summed per miner, screened (an anomaly screen drops the sums that point away from or
far beyond the rest) and combined by the task's aggregator (by default the mean of what the
screen kept; or median, trimmed mean, multi-Krum; ``mean`` is the unprotected average,
unscreened). Its own steps are
already in its model, so it adds ``aggregate - own``: a poisoned update moves honest models
only as far as the screen and the aggregator let it.

The node's event loop adds updates; the training thread takes them between iterations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import torch

from pouw.crypto import hash_concat
from pouw.ml.aggregation import make_aggregator
from pouw.ml.compression import CompressedUpdate

APPLY_EVERY_S = 1.0
"""How often a miner applies its peers' updates: each IT_RES batch covers half a second."""

Screen: TypeAlias = Callable[[Sequence[bytes], Sequence[torch.Tensor]], list[bool]]
"""Flags the anomalous updates of a round by their senders (True = leave out); the node
gives `pouw.security.SenderScreen().screen`."""


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
        aggregator: str,
        *,
        screen: Screen | None = None,
        quorum: int = 2,
        every_s: float = APPLY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own = own
        self.miners = frozenset(miners)
        """The task's drawn miners (public keys): nobody else's updates count."""
        self.size = size
        self.aggregator = aggregator
        self.screen = screen
        self.quorum = quorum
        """Miners (itself included) whose updates must be in before any is applied: a screen
        judges an update against the others' median and cannot judge two; with fewer, an
        attacker's update would go into the average unscreened."""
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

    def latest(self) -> list[torch.Tensor]:
        """Each peer's most recent update (what a little-is-enough attacker imitates)."""
        with self._lock:
            return [update for miner, update in self._latest.items() if miner != self.own]

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
        if self.screen is not None:
            flags = self.screen(miners, [sums[m] for m in miners])
            miners = [m for m, flag in zip(miners, flags, strict=True) if not flag or m == self.own]
        aggregate = aggregate_updates(self.aggregator, [sums[m] for m in miners])
        digest = hash_concat(*(d for m in miners for d in digests.get(m, [])))
        return AppliedUpdates(aggregate - own, digest, len(miners))


def aggregate_updates(name: str, updates: Sequence[torch.Tensor]) -> torch.Tensor:
    """`name`'s aggregate, assuming up to a third of the updates Byzantine (at least one for
    multi-Krum, which falls back to the median when that leaves too few neighbours)."""
    byzantine = max(1, (len(updates) - 1) // 3)
    return make_aggregator(name, byzantine).aggregate(updates)


def apply_correction(parameters: Sequence[torch.nn.Parameter], correction: torch.Tensor) -> None:
    """Add a flat vector to the parameters in place (their numpy views stay valid)."""
    offset = 0
    with torch.no_grad():
        for parameter in parameters:
            count = parameter.numel()
            parameter.add_(correction[offset : offset + count].view_as(parameter))
            offset += count
