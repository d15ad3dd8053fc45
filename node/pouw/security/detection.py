"""Screening a round's updates for Byzantine senders (detection and reputation; the bounds that
hold whatever the screen misses are `pouw.security.defence`'s).

Each update of a round is scored on two things:

- its length against the round's median length (a scaled or noisy update is longer than
  most; f < n/2 attackers cannot move the median length out of the honest lengths' range);
- its cosine with the round's reference: the robust aggregate (`RobustAggregator`, the
  defence's own) of the updates of senders not flagged in their last round, each copy of an
  earlier update left out (one vote, however many send it). Attackers cannot turn it: f of
  them move it no further than the aggregator's bound, where they dominated a plain mean of
  noisy honest updates and made every honest cosine look like theirs. Neither is the
  coordinate median a reference: f attackers sending one central value (ALIE, IPM) become the
  median when the honest spread is wider than the honest mean. Among fewer than FEW_SENDERS
  trusted updates the reference is their coordinate median (one attacker among three cannot
  move it past an honest value).

One round's cosine says little when the honest updates share little: late in training a
minibatch gradient is mostly noise, and a sign-flipped one is as orthogonal to the rest as an
honest one. So a sender's direction score is its cosines averaged over rounds, each round
weighted by how much that round's senders agree (the median of all but the f lowest cosines,
at least 0), older rounds fading by DECAY for each full unit of agreement that follows: rounds
where honest work points one way decide, rounds of pure noise change nothing, and the evidence
of a consistent attacker does not wear off while the signal is gone. No round credits a
sender more than the round's agreement: sending the honest mean, which agrees with the
reference far better than any honest update, banks nothing to pay for attacks later. A zero
update scores cosine 0: no credit either. Senders flagged in their last round are left out of
the reference, so colluding attackers, once caught, no longer vouch for each other. What the
screen cannot see in rounds of pure noise (an attacker bending the small honest mean there),
the defence's aggregation bounds: `pouw.security.defence`.

A sender is flagged in a round when:
- the round's length ratio passes MAX_ROUND_NORM_RATIO (at once, whatever its history);
- its direction score is negative, or below MIN_SCORE of the median of the senders' scores
  but the f highest;
- the median of its last `window` length ratios is above MAX_WINDOW_NORM_RATIO (above
  MAX_NORM_RATIO while it has fewer rounds).
Thresholds and their false-positive rates: docs/security.md (`pouw bench attacks`).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from pouw.ml.aggregation import RobustAggregator, copies

MAX_NORM_RATIO = 4.0
WINDOW = 10
MAX_WINDOW_NORM_RATIO = 3.0
MAX_ROUND_NORM_RATIO = 10.0
"""An update this much longer than the round's median is flagged whatever its history."""
MIN_SCORE = 0.4
"""A sender whose direction score is below this share of the senders' median score (and any
sender whose score is negative) is flagged."""
DECAY = 0.9
MIN_EVIDENCE = 1.5
"""Agreement weighed before a sender's direction is judged (two or three informative rounds:
one round's cosine alone is too noisy to flag anyone)."""
FEW_SENDERS = 4
"""Fewer trusted updates than this are scored against their coordinate median (round_scores)."""
MIN_UPDATES = 3
"""Fewer updates than this have no meaningful median: nothing is flagged."""


@dataclass(frozen=True)
class RoundScore:
    """One update against its round: its length over the median length, its cosine with the
    round's reference, and how much the round's senders agreed (its weight)."""

    norm_ratio: float
    cosine: float
    weight: float


@dataclass(frozen=True)
class RoundReference:
    """What a round's updates were judged by, kept to judge a late sender's update alone."""

    median_norm: float
    aggregate: torch.Tensor
    weight: float

    def score(self, update: torch.Tensor) -> RoundScore:
        """A sender that was not in the round: scored against the round's reference."""
        ratio = _ratio(float(update.norm()), self.median_norm)
        return RoundScore(ratio, _cosine(update, self.aggregate), self.weight)


def round_scores(
    updates: Sequence[torch.Tensor], trusted: Sequence[bool] | None = None
) -> tuple[list[RoundScore], RoundReference]:
    """Each update's score, and the round's reference (module docstring). Only `trusted`
    updates (by default all) but copies of an earlier one make up the references (if none,
    all)."""
    stacked = torch.stack(list(updates))
    n = len(stacked)
    norms = stacked.norm(dim=1)
    median_norm = float(norms.median())
    # A copy of an earlier update is left out of the references: one vote, however many send it.
    original = [not copy_ for copy_ in copies(updates)]
    if trusted is not None:
        original = [ok and trust for ok, trust in zip(original, trusted, strict=True)]
    mask = torch.tensor(original if any(original) else [True] * n)
    trusted_updates = stacked[mask]
    if len(trusted_updates) < FEW_SENDERS:
        # Among three, a robust aggregate cannot leave one attacker out: their coordinate median
        # can, when the other two are honest.
        reference = trusted_updates.median(dim=0).values
    else:
        reference = RobustAggregator((n - 1) // 3).aggregate(list(trusted_updates))
    cosines = [_cosine(update, reference) for update in stacked]
    weight = _agreement([c for c, ok in zip(cosines, mask.tolist(), strict=True) if ok])
    scores = [
        RoundScore(_ratio(float(norms[i]), median_norm), cosines[i], weight) for i in range(n)
    ]
    return scores, RoundReference(median_norm, reference, weight)


@dataclass
class _Evidence:
    ratios: deque[float]
    weighted_cosines: float = 0.0
    weights: float = 0.0

    @property
    def direction(self) -> float | None:
        """The weighted mean cosine; None until MIN_EVIDENCE of agreement has been weighed."""
        return self.weighted_cosines / self.weights if self.weights >= MIN_EVIDENCE else None


@dataclass
class SenderScreen:
    """Flags senders on the evidence of their rounds so far (module docstring)."""

    window: int = WINDOW
    max_norm_ratio: float = MAX_WINDOW_NORM_RATIO
    min_score: float = MIN_SCORE
    decay: float = DECAY
    _evidence: dict[Hashable, _Evidence] = field(default_factory=dict, repr=False)
    _flagged: dict[Hashable, bool] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def fresh(self) -> SenderScreen:
        """The same screen with no evidence yet."""
        return SenderScreen(self.window, self.max_norm_ratio, self.min_score, self.decay)

    def screen(self, senders: Sequence[Hashable], updates: Sequence[torch.Tensor]) -> list[bool]:
        """One flag per (sender, update) of a round; every sender appears at most once."""
        if len(senders) != len(updates):
            raise ValueError(f"{len(senders)} senders for {len(updates)} updates")
        if len(set(senders)) != len(senders):
            raise ValueError("one update per sender, each sender once")
        if len(updates) < MIN_UPDATES:
            return [False] * len(updates)
        trusted = [not self._flagged.get(sender, False) for sender in senders]
        scores, _ = round_scores(updates, trusted)
        for sender, score in zip(senders, scores, strict=True):
            self._add(sender, score)
        return [self._judge(sender, score) for sender, score in zip(senders, scores, strict=True)]

    def observe(self, sender: Hashable, score: RoundScore) -> bool:
        """Add a sender's score for a round judged without it; whether it is flagged."""
        self._add(sender, score)
        return self._judge(sender, score)

    def _add(self, sender: Hashable, score: RoundScore) -> None:
        evidence = self._evidence.get(sender)
        if evidence is None:
            evidence = self._evidence[sender] = _Evidence(deque(maxlen=self.window))
        evidence.ratios.append(score.norm_ratio)
        fading = self.decay**score.weight
        credit = min(score.cosine, score.weight)
        evidence.weighted_cosines = fading * evidence.weighted_cosines + score.weight * credit
        evidence.weights = fading * evidence.weights + score.weight

    def _judge(self, sender: Hashable, score: RoundScore) -> bool:
        evidence = self._evidence[sender]
        direction = evidence.direction
        limit = self.max_norm_ratio if len(evidence.ratios) == self.window else MAX_NORM_RATIO
        flagged = (
            score.norm_ratio > MAX_ROUND_NORM_RATIO
            or (direction is not None and direction < self._min_direction())
            or statistics.median(evidence.ratios) > limit
        )
        self._flagged[sender] = flagged
        return flagged

    def _min_direction(self) -> float:
        """`min_score` of the median of the senders' scores but the f highest (colluders
        copying one update agree perfectly with each other and would raise it), at least 0."""
        scores = sorted(e.direction for e in self._evidence.values() if e.direction is not None)
        if not scores:
            return 0.0
        kept = scores[: len(scores) - (len(scores) - 1) // 3]
        return max(0.0, self.min_score * statistics.median(kept))

    def direction(self, sender: Hashable) -> float | None:
        """A sender's weighted mean cosine so far (None: no evidence yet)."""
        evidence = self._evidence.get(sender)
        return None if evidence is None else evidence.direction

    def forget(self, sender: Hashable) -> None:
        self._evidence.pop(sender, None)
        self._flagged.pop(sender, None)


def _agreement(cosines: list[float]) -> float:
    """How much a round's senders agree: the median of the n - f highest cosines (the f lowest
    may be attackers pointing away), at least 0."""
    highest = sorted(cosines, reverse=True)[: max(1, len(cosines) - (len(cosines) - 1) // 3)]
    return max(0.0, statistics.median(highest))


def _ratio(norm: float, median_norm: float) -> float:
    if median_norm > 0:
        return norm / median_norm
    return 0.0 if norm == 0 else float("inf")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """0 when either is zero: no direction, neither evidence nor credit."""
    denominator = float(a.norm()) * float(b.norm())
    return float(a @ b) / denominator if denominator > 0 else 0.0
