"""The defence a miner puts between its peers' updates and its model (docs/security.md).

Each round (one aggregation of one update per sender):

1. Degenerate updates are left out and flagged: a wrong length, or any NaN or infinite entry.
   A zero update stays in: it is a vote for not moving, and scores cosine 0, so it banks no
   credit with the screen.
2. The screen (`SenderScreen`) scores every update's length against the round's median and
   its direction against the round's robust aggregate, and flags senders over their recent
   rounds, or at once for a round over ten times too long. Its flags feed detection and
   reputation; flagged updates are also left out.
3. Each kept sender's update joins its moving average (MOMENTUM; worker momentum,
   Karimireddy, He and Jaggi 2021, "Learning from history for Byzantine robust
   optimization"): averaging over rounds shrinks the spread of the honest updates, and the
   spread is what attackers hiding inside it (ALIE, IPM) exploit and what a robust
   aggregator's error grows with.
4. Copies of one average count once (`one_vote_each`: mimic's attackers resend an honest
   update to over-weigh it).
5. The averages are combined by `RobustAggregator` for f Byzantine senders: each clipped to a
   length of the honest majority's (ARC), mixed with its nearest neighbours (NNM), trimmed
   coordinate-wise, and the result clipped again. Whatever the screen misses, no round moves
   the model further than an honest sender's average of that round could, and the aggregate
   stays within the (f, kappa)-robustness bound of the honest averages' mean.

`probe` runs a round on a copy, changing nothing: what an attacker who knows the defence (and
with `fresh`, not its history) uses to choose its update (`pouw.security.adaptive`).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from pouw.ml.aggregation import copies, make_aggregator
from pouw.security.detection import SenderScreen

MOMENTUM = 0.8
"""Weight of a sender's past in its moving average: 0.9 lost 0.8 pp without attackers in
`pouw bench attacks`, 0 let an adaptive IPM attacker cost 5 pp, 0.75 up to 3 (docs/security.md)."""


@dataclass(frozen=True)
class Verdict:
    aggregate: torch.Tensor
    flagged: tuple[bool, ...]
    """Per update: flagged by the screen, or degenerate (and so left out)."""
    degenerate: tuple[bool, ...]


def degenerate(update: torch.Tensor, size: int) -> bool:
    """A wrong shape, or a NaN or infinite entry."""
    return update.shape != (size,) or not bool(torch.isfinite(update).all())


def one_vote_each(updates: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of one update are one vote: honest senders, on their own data, never send the same
    update, and copies would over-weigh the one they copy (mimic)."""
    return [update for update, copy_ in zip(updates, copies(updates), strict=True) if not copy_]


def assumed_byzantine(miners: int) -> int:
    """The attackers a task of `miners` miners is defended against: the most that stay under a
    third, at least one."""
    return max(1, (miners - 1) // 3)


@dataclass
class Defence:
    """A task's defence for `size`-entry updates from up to `byzantine` attackers, combining
    what it keeps with the aggregator named `aggregator` (`make_aggregator`)."""

    size: int
    byzantine: int
    screen: SenderScreen = field(default_factory=SenderScreen)
    aggregator: str = "robust"
    momentum: float = MOMENTUM
    _averages: dict[Hashable, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def for_task(cls, size: int, miners: int, aggregator: str) -> Defence:
        """The defence of a task with `miners` miners and the aggregator it names."""
        return cls(size, assumed_byzantine(miners), aggregator=aggregator)

    def aggregate(self, senders: Sequence[Hashable], updates: Sequence[torch.Tensor]) -> Verdict:
        """The round's aggregate, each sender once; all zero when nothing usable came."""
        verdict, averages = self._judge(self.screen, senders, updates)
        self._averages.update(averages)
        return verdict

    def probe(
        self, senders: Sequence[Hashable], updates: Sequence[torch.Tensor], *, fresh: bool = False
    ) -> Verdict:
        """The verdict this round would get, with nothing remembered (`fresh`: as if the screen
        had no history)."""
        screen = self.screen.fresh() if fresh else copy.deepcopy(self.screen)
        verdict, _ = self._judge(screen, senders, updates)
        return verdict

    def _judge(
        self, screen: SenderScreen, senders: Sequence[Hashable], updates: Sequence[torch.Tensor]
    ) -> tuple[Verdict, dict[Hashable, torch.Tensor]]:
        if len(senders) != len(updates):
            raise ValueError(f"{len(senders)} senders for {len(updates)} updates")
        broken = tuple(degenerate(update, self.size) for update in updates)
        usable = [i for i, bad in enumerate(broken) if not bad]
        if not usable:
            return Verdict(torch.zeros(self.size), broken, broken), {}
        screened = screen.screen([senders[i] for i in usable], [updates[i] for i in usable])
        flagged = list(broken)
        for index, flag in zip(usable, screened, strict=True):
            flagged[index] = flag
        kept = [i for i in usable if not flagged[i]] or usable
        averages = {senders[i]: self._average(senders[i], updates[i]) for i in kept}
        distinct = one_vote_each(list(averages.values()))
        aggregate = make_aggregator(self.aggregator, self.byzantine).aggregate(distinct)
        return Verdict(aggregate, tuple(flagged), broken), averages

    def _average(self, sender: Hashable, update: torch.Tensor) -> torch.Tensor:
        """The sender's moving average of its updates with this one (its first to begin with)."""
        previous = self._averages.get(sender)
        if previous is None or self.momentum == 0:
            return update.clone()
        return previous * self.momentum + update * (1 - self.momentum)

    def forget(self, sender: Hashable) -> None:
        self.screen.forget(sender)
        self._averages.pop(sender, None)
