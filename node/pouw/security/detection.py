"""Screening updates for Byzantine ones, on top of `pouw.ml.aggregation.anomaly_scores`.

Each update is compared with its round's coordinate median: its norm ratio and its cosine.
Boosting makes an update much longer than the median; sign flipping points it away; Gaussian
noise in ~17k dimensions is nearly orthogonal to everything honest and, at NOISE_FACTOR, longer.

Two views. Thresholds were chosen with `pouw bench attacks`'s training core (digits MLP
64-128-64-10, 7 miners, per-round gradients of batch 64, seeds 0-2); the bench reports other
seeds, and docs/security.md has its figures:

- `UpdateScreen` judges one round alone. Late in training an honest minibatch gradient is
  noisy: 1% of them have a cosine below -0.13 with the median and 1% are over 3.5 times as
  long, so a single round cannot tell a flipped update from an unlucky honest one. Defaults
  (ratio > 4 or cosine < 0) flag about 4% of honest updates and 76% of flipped ones.
- `SenderScreen` judges each sender over its last `window` rounds (a node knows who signed
  each update): the mean cosine and the median norm ratio. Honest noise averages out, a
  consistent attacker's does not: over 10 rounds (mean cosine < 0.2 or median ratio > 3)
  under 0.5% of honest updates are flagged and over 99% of flipped, scaled and noise ones.

"A little is enough" (Baruch et al. 2019) stays inside the honest spread by design and is
flagged by neither; `ScreenedAggregator`'s mean of the unflagged updates bounds it best.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from pouw.ml.aggregation import (
    Aggregator,
    AnomalyScore,
    CoordinateMedianAggregator,
    MeanAggregator,
    anomaly_scores,
)

MAX_NORM_RATIO = 4.0
MIN_COSINE = 0.0
WINDOW = 10
MAX_WINDOW_NORM_RATIO = 3.0
MIN_WINDOW_COSINE = 0.2
MIN_UPDATES = 3
"""Fewer updates than this have no meaningful median: nothing is flagged."""


@dataclass(frozen=True)
class UpdateScreen:
    """Flags updates of one round by norm ratio and cosine against the round's coordinate
    median (see the module docstring for the thresholds and what they catch)."""

    max_norm_ratio: float = MAX_NORM_RATIO
    min_cosine: float = MIN_COSINE

    def scores(self, updates: Sequence[torch.Tensor]) -> list[AnomalyScore]:
        return anomaly_scores(updates, self.max_norm_ratio, self.min_cosine)

    def screen(self, updates: Sequence[torch.Tensor]) -> list[bool]:
        """One flag per update (True = flagged as Byzantine)."""
        if len(updates) < MIN_UPDATES:
            return [False] * len(updates)
        return [score.suspicious for score in self.scores(updates)]


@dataclass
class SenderScreen:
    """Flags a sender whose updates over its last `window` rounds have a mean cosine below
    `min_cosine` or a median norm ratio above `max_norm_ratio`. Until a sender has `window`
    rounds of history, each of its updates is judged alone by `round_screen`."""

    window: int = WINDOW
    max_norm_ratio: float = MAX_WINDOW_NORM_RATIO
    min_cosine: float = MIN_WINDOW_COSINE
    round_screen: UpdateScreen = field(default_factory=UpdateScreen)
    _history: dict[Hashable, deque[AnomalyScore]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def screen(self, senders: Sequence[Hashable], updates: Sequence[torch.Tensor]) -> list[bool]:
        """One flag per (sender, update) of a round; every sender appears at most once."""
        if len(senders) != len(updates):
            raise ValueError(f"{len(senders)} senders for {len(updates)} updates")
        if len(updates) < MIN_UPDATES:
            return [False] * len(updates)
        return self.observe(senders, anomaly_scores(updates))

    def observe(self, senders: Sequence[Hashable], scores: Sequence[AnomalyScore]) -> list[bool]:
        """`screen` for the round's scores already computed (`anomaly_scores`)."""
        if len(senders) != len(scores) or len(set(senders)) != len(senders):
            raise ValueError("one score per sender, each sender once")
        flags = []
        for sender, score in zip(senders, scores, strict=True):
            recent = self._history.setdefault(sender, deque(maxlen=self.window))
            recent.append(score)
            if len(recent) < self.window:
                flags.append(
                    score.norm_ratio > self.round_screen.max_norm_ratio
                    or score.cosine < self.round_screen.min_cosine
                )
                continue
            cosine = statistics.fmean(s.cosine for s in recent)
            ratio = statistics.median(s.norm_ratio for s in recent)
            flags.append(cosine < self.min_cosine or ratio > self.max_norm_ratio)
        return flags

    def forget(self, sender: Hashable) -> None:
        self._history.pop(sender, None)


@dataclass
class ScreenedAggregator:
    """The round's update from named senders' updates: drop those `screen` flags, aggregate
    the rest with `aggregator`. The plain mean by default: screening removes the gross
    attacks, and the mean is hurt least by what screening cannot see ("a little is enough"
    shifts the coordinate median and multi-Krum's choice more than the mean; measured in
    `pouw bench attacks`). If every update is flagged, the coordinate median of all of them."""

    screen: SenderScreen = field(default_factory=SenderScreen)
    aggregator: Aggregator = field(default_factory=MeanAggregator)

    def aggregate(
        self, senders: Sequence[Hashable], updates: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[bool]]:
        """The aggregate and each sender's flag."""
        flags = self.screen.screen(senders, updates)
        return self.combine(updates, flags), flags

    def combine(self, updates: Sequence[torch.Tensor], flags: Sequence[bool]) -> torch.Tensor:
        """The aggregate of the updates not flagged."""
        kept = [update for update, flagged in zip(updates, flags, strict=True) if not flagged]
        if not kept:
            return CoordinateMedianAggregator().aggregate(updates)
        return self.aggregator.aggregate(kept)
