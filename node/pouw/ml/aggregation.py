"""Robust aggregation of peers' updates, and anomaly scores that flag outliers.

All aggregators take same-length float32 vectors and return one. Coordinate median and
trimmed mean bound the influence of any f < n/2 outliers per coordinate; multi-Krum (Blanchard
et al. 2017) averages the updates closest to their neighbours, tolerating f with n > 2f + 2.

``robust``, the default, is the one with a guarantee against attackers who know it
(docs/security.md): adaptive robust clipping (ARC, Allouah et al. 2024) bounds every update's
length by one of the honest majority's, updates shorter than the median length are lifted to
it (`lift_short`), nearest-neighbour mixing (NNM, Allouah et al. 2023) then averages each
update with its n - f nearest, and a coordinate-wise trimmed mean drops the f largest and
smallest of every coordinate; the result is clipped to the same bound, so no round moves the
model further than an honest update of that round could.

A task names one of AGGREGATORS. Its miners apply every one but ``mean`` behind the anomaly
screen (`pouw.security.Defence`, in `pouw.mining.peers`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import torch

AGGREGATORS = ("robust", "screened_mean", "mean", "median", "trimmed_mean", "krum")
UNSCREENED = "mean"
"""The one aggregator applied without the screen in front: the unprotected average."""


class Aggregator(Protocol):
    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor: ...


def _stack(updates: Sequence[torch.Tensor]) -> torch.Tensor:
    if not updates:
        raise ValueError("nothing to aggregate")
    shape = updates[0].shape
    if len(shape) != 1 or any(update.shape != shape for update in updates):
        raise ValueError("updates must be flat vectors of one length")
    return torch.stack(list(updates))


class MeanAggregator:
    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        return _stack(updates).mean(dim=0)


class CoordinateMedianAggregator:
    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = _stack(updates)
        # The mean of the two middle values for even n, so the result is symmetric.
        return stacked.quantile(0.5, dim=0) if len(stacked) > 1 else stacked[0]


class TrimmedMeanAggregator:
    def __init__(self, trim_fraction: float = 0.2) -> None:
        if not 0.0 <= trim_fraction <= 0.5:
            raise ValueError(f"trim_fraction {trim_fraction} must be in [0, 0.5]")
        self.trim_fraction = trim_fraction

    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = _stack(updates)
        n = len(stacked)
        k = min(int(self.trim_fraction * n), (n - 1) // 2)
        ordered = stacked.sort(dim=0).values
        return ordered[k : n - k].mean(dim=0)


class MultiKrumAggregator:
    """Multi-Krum: the mean of the `selected` (default n - f) updates with the lowest scores.

    With n <= f + 2 there are no neighbours to score, so `aggregate` falls back to the
    coordinate median (and `select` raises).
    """

    def __init__(self, byzantine: int, selected: int | None = None) -> None:
        if byzantine < 0:
            raise ValueError(f"byzantine must be >= 0, got {byzantine}")
        if selected is not None and selected < 1:
            raise ValueError(f"selected must be >= 1, got {selected}")
        self.byzantine = byzantine
        self.selected = selected

    def select(self, updates: Sequence[torch.Tensor]) -> list[int]:
        """Sorted indices of the chosen updates; a score sums the n - f - 2 nearest distances²."""
        stacked = _stack(updates)
        n, f = len(stacked), self.byzantine
        neighbours = n - f - 2
        if neighbours < 1:
            raise ValueError(f"krum needs n > f + 2, got n={n}, f={f}")
        # Exact distances and a stable sort, so every peer selects the same updates.
        distances = torch.cdist(stacked, stacked, compute_mode="donot_use_mm_for_euclid_dist")
        nearest = distances.pow(2).sort(dim=1).values[:, 1 : neighbours + 1]
        scores = nearest.sum(dim=1)
        m = min(self.selected if self.selected is not None else n - f, n)
        return sorted(torch.argsort(scores, stable=True)[:m].tolist())

    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(updates) <= self.byzantine + 2:
            return CoordinateMedianAggregator().aggregate(updates)
        chosen = self.select(updates)
        return _stack([updates[i] for i in chosen]).mean(dim=0)


class RobustAggregator:
    """ARC, short rows lifted to the median length, NNM, then a coordinate-wise trimmed mean
    of f a side, clipped to ARC's radius (see the module docstring). With n <= 2f (too few to
    trim f a side) f is taken as (n - 1) // 2: the most a majority of the given updates can
    outvote."""

    def __init__(self, byzantine: int) -> None:
        if byzantine < 0:
            raise ValueError(f"byzantine must be >= 0, got {byzantine}")
        self.byzantine = byzantine

    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = _stack(updates)
        n = len(stacked)
        f = min(self.byzantine, (n - 1) // 2)
        clipped, radius = adaptive_clip(stacked, f)
        mixed = nearest_neighbour_mixing(lift_short(clipped), f)
        ordered = mixed.sort(dim=0).values
        return clip_norm(ordered[f : n - f].mean(dim=0), radius)


def adaptive_clip(stacked: torch.Tensor, byzantine: int) -> tuple[torch.Tensor, float]:
    """ARC (Allouah et al. 2024): the k = max(f, floor(2f(n - f)/n)) longest rows clipped to
    the length of the (k + 1)-th longest, and that length. As k >= f, the radius is at most the
    longest honest row's length whoever the f attackers are."""
    n = len(stacked)
    norms = stacked.norm(dim=1)
    k = min(n - 1, max(byzantine, (2 * byzantine * (n - byzantine)) // n))
    radius = float(norms.sort(descending=True, stable=True).values[k])
    scale = torch.where(norms > radius, radius / norms.clamp_min(1e-30), torch.ones_like(norms))
    return stacked * scale.unsqueeze(1), radius


def lift_short(stacked: torch.Tensor) -> torch.Tensor:
    """Rows shorter than the median length scaled up to it (zero rows stay zero). A short
    vector is close to every other when the honest ones are long and noisy, so nearest-neighbour
    mixing would give it a place in every mixture: attackers sending a short step against the
    honest mean (IPM) exploit exactly that. At the median length it is one voice among others."""
    norms = stacked.norm(dim=1)
    floor = float(norms.median())
    short = (norms < floor) & (norms > 0)
    scale = torch.where(short, floor / norms.clamp_min(1e-30), torch.ones_like(norms))
    return stacked * scale.unsqueeze(1)


def nearest_neighbour_mixing(stacked: torch.Tensor, byzantine: int) -> torch.Tensor:
    """NNM (Allouah et al. 2023): each row replaced by the mean of its n - f nearest rows,
    itself included (exact distances and a stable sort: every peer mixes alike)."""
    n = len(stacked)
    distances = torch.cdist(stacked, stacked, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = distances.argsort(dim=1, stable=True)[:, : n - byzantine]
    return stacked[nearest].mean(dim=1)


def clip_norm(vector: torch.Tensor, radius: float) -> torch.Tensor:
    norm = float(vector.norm())
    return vector * (radius / norm) if norm > radius else vector


def copies(updates: Sequence[torch.Tensor]) -> list[bool]:
    """Per update, whether an earlier one is bit for bit the same."""
    seen: set[bytes] = set()
    flags = []
    for update in updates:
        digest = hashlib.blake2b(update.detach().cpu().contiguous().numpy().tobytes()).digest()
        flags.append(digest in seen)
        seen.add(digest)
    return flags


def make_aggregator(name: str, byzantine: int = 0) -> Aggregator:
    """`name`'s combining step; the screen in front of it is the caller's."""
    if name == "robust":
        return RobustAggregator(byzantine)
    if name in ("mean", "screened_mean"):
        return MeanAggregator()
    if name == "median":
        return CoordinateMedianAggregator()
    if name == "trimmed_mean":
        return TrimmedMeanAggregator()
    if name == "krum":
        return MultiKrumAggregator(byzantine)
    raise ValueError(f"unknown aggregator {name!r}: one of {', '.join(AGGREGATORS)}")
