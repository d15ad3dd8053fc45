"""Robust aggregation of peers' updates, and anomaly scores that flag outliers.

All aggregators take same-length float32 vectors and return one. Coordinate median and
trimmed mean bound the influence of any f < n/2 outliers per coordinate; multi-Krum (Blanchard
et al. 2017) averages the updates closest to their neighbours, tolerating f with n > 2f + 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum")


class Aggregator(Protocol):
    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor: ...


def _stack(updates: Sequence[torch.Tensor]) -> torch.Tensor:
    if not updates:
        raise ValueError("nothing to aggregate")
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
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction {trim_fraction} must be in [0, 0.5)")
        self.trim_fraction = trim_fraction

    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = _stack(updates)
        n = len(stacked)
        k = min(int(self.trim_fraction * n), (n - 1) // 2)
        ordered = stacked.sort(dim=0).values
        return ordered[k : n - k].mean(dim=0)


class MultiKrumAggregator:
    def __init__(self, byzantine: int, selected: int | None = None) -> None:
        self.byzantine = byzantine
        self.selected = selected

    def select(self, updates: Sequence[torch.Tensor]) -> list[int]:
        """Indices of the m updates with the lowest Krum scores (n - f - 2 nearest distances)."""
        stacked = _stack(updates)
        n, f = len(stacked), self.byzantine
        neighbours = n - f - 2
        if neighbours < 1:
            raise ValueError(f"krum needs n > f + 2, got n={n}, f={f}")
        distances = torch.cdist(stacked, stacked).pow(2)
        nearest = distances.sort(dim=1).values[:, 1 : neighbours + 1]
        scores = nearest.sum(dim=1)
        m = self.selected if self.selected is not None else n - f
        return sorted(scores.argsort()[:m].tolist())

    def aggregate(self, updates: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(updates) <= self.byzantine + 2:
            # Too few updates for Krum's neighbourhood: the median still bounds outliers.
            return CoordinateMedianAggregator().aggregate(updates)
        chosen = self.select(updates)
        return _stack([updates[i] for i in chosen]).mean(dim=0)


def make_aggregator(name: str, byzantine: int = 0) -> Aggregator:
    if name == "mean":
        return MeanAggregator()
    if name == "median":
        return CoordinateMedianAggregator()
    if name == "trimmed_mean":
        return TrimmedMeanAggregator()
    if name == "krum":
        return MultiKrumAggregator(byzantine)
    raise ValueError(f"unknown aggregator {name!r}: one of {', '.join(AGGREGATORS)}")


@dataclass(frozen=True)
class AnomalyScore:
    norm_ratio: float
    cosine: float
    suspicious: bool


def anomaly_scores(
    updates: Sequence[torch.Tensor], max_norm_ratio: float = 3.0, min_cosine: float = 0.0
) -> list[AnomalyScore]:
    """Each update against the coordinate median: how much larger, and how aligned."""
    median = CoordinateMedianAggregator().aggregate(updates)
    median_norm = float(median.norm())
    scores = []
    for update in updates:
        norm = float(update.norm())
        ratio = norm / median_norm if median_norm > 0 else (0.0 if norm == 0 else float("inf"))
        denominator = norm * median_norm
        cosine = float(torch.dot(update, median)) / denominator if denominator > 0 else 1.0
        scores.append(AnomalyScore(ratio, cosine, ratio > max_norm_ratio or cosine < min_cosine))
    return scores
