"""Screening a task's updates, round by round, for Byzantine miners (docs/security.md).

The nodes that check a task (its supervisors, verifiers and evaluator) receive every miner's
IT_RES. One iteration's sparse update says little; what a miner pushes the model towards
over a round does. So a round is `epochs_per_round` epochs (about ROUNDS_PER_TASK rounds a
task, whatever its length), each miner's published updates in a round are summed, and the
round's sums are screened together once every miner has moved past the round, or once at
least MIN_SCREENED have moved LAGGARD_ROUNDS further. A laggard left out of its round is
judged late, when it moves past the round, against the reference the round was judged by: an
attacker slowed by its own attack (or any slow miner) is screened on every round all the same.
The screen is `pouw.security.SenderScreen`: each sum's norm ratio and cosine against the
round's robust aggregate, judged over the sender's last rounds, so that an unlucky honest
round is forgiven and a consistent attacker is not.

A flagged miner loses reputation (the node's screening role does that); a miner flagged in most of
its screened rounds is left out of the task's ranking and payouts (`excluded`).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from pouw.security.detection import MIN_UPDATES, RoundReference, SenderScreen, round_scores

ROUNDS_PER_TASK = 40
MIN_SCREENED = MIN_UPDATES
"""Fewer updates have no meaningful reference: the screen flags nothing."""
LAGGARD_ROUNDS = 2
FINISHED = 2**62
"""The round a miner that sent its final model is taken to have reached."""
_Key = TypeVar("_Key")
REFERENCES_BYTES = 256 * 1024 * 1024
"""Judged rounds' references kept for laggards, at most this much (the oldest go
first; a laggard's round whose reference is gone is not judged)."""


@dataclass(frozen=True)
class ScreenedRound:
    round: int
    screened: tuple[bytes, ...]
    """The miners (public keys) whose updates were screened together."""
    flagged: tuple[bytes, ...]


@dataclass
class _JudgedRound:
    reference: RoundReference
    screened: set[bytes] = field(default_factory=set)


class TaskScreen:
    def __init__(
        self,
        miners: Sequence[bytes],
        epochs: int,
        screen: SenderScreen | None = None,
    ) -> None:
        self.miners = tuple(miners)
        self.epochs_per_round = max(1, epochs // ROUNDS_PER_TASK)
        self.screen = screen or SenderScreen()
        self.screened_rounds: Counter[bytes] = Counter()
        self.flagged_rounds: Counter[bytes] = Counter()
        self._sums: dict[int, dict[bytes, torch.Tensor]] = {}
        self._reached: dict[bytes, int] = {}
        self._next = 0
        """The first round not yet screened."""
        self._judged: OrderedDict[int, _JudgedRound] = OrderedDict()
        self._late: dict[tuple[int, bytes], torch.Tensor] = {}
        """Laggards' sums for rounds judged without them: (round, miner) -> sum so far."""

    def add(self, miner: bytes, epoch: int, update: torch.Tensor) -> list[ScreenedRound]:
        """A miner's published update (dense) at `epoch`; returns the rounds it completed."""
        if miner not in self.miners:
            return []
        round_ = epoch // self.epochs_per_round
        if round_ >= self._next:
            _accumulate(self._sums.setdefault(round_, {}), miner, update)
        elif round_ in self._judged and miner not in self._judged[round_].screened:
            _accumulate(self._late, (round_, miner), update)
        self._reached[miner] = max(self._reached.get(miner, 0), round_)
        return self._ready() + self._ready_late()

    def finish(self, miner: bytes) -> list[ScreenedRound]:
        """The miner sent its final model: it has moved past every round."""
        if miner not in self.miners:
            return []
        self._reached[miner] = FINISHED
        return self._ready() + self._ready_late()

    def excluded(self) -> set[bytes]:
        """Miners flagged in more than half of their screened rounds."""
        return {
            miner
            for miner, flagged in self.flagged_rounds.items()
            if 2 * flagged > self.screened_rounds[miner]
        }

    def _ready(self) -> list[ScreenedRound]:
        done = []
        while self._sums and self._next <= max(self._sums):
            round_ = self._next
            past = [m for m in self.miners if self._reached.get(m, -1) > round_]
            far = [m for m in past if self._reached[m] >= round_ + LAGGARD_ROUNDS]
            if len(past) < len(self.miners) and len(far) < MIN_SCREENED:
                break
            sums = self._sums.pop(round_, {})
            result = self._screen(round_, [(m, sums[m]) for m in past if m in sums])
            if result is not None:
                done.append(result)
                for laggard in sums.keys() - set(past):
                    self._late[(round_, laggard)] = sums[laggard]
            self._next += 1
        return done

    def _ready_late(self) -> list[ScreenedRound]:
        """Laggards' sums for judged rounds they have now moved past, each judged alone
        against its round's reference."""
        done = []
        for round_, miner in sorted(self._late):
            if self._reached.get(miner, -1) <= round_:
                continue
            update = self._late.pop((round_, miner))
            judged = self._judged.get(round_)
            if judged is None:
                continue
            judged.screened.add(miner)
            flag = self.screen.observe(miner, judged.reference.score(update))
            self.screened_rounds[miner] += 1
            self.flagged_rounds[miner] += flag
            done.append(ScreenedRound(round_, (miner,), (miner,) if flag else ()))
        return done

    def _screen(
        self, round_: int, updates: list[tuple[bytes, torch.Tensor]]
    ) -> ScreenedRound | None:
        if len(updates) < MIN_SCREENED:
            return None
        screened = tuple(m for m, _ in updates)
        scores, reference = round_scores([update for _, update in updates])
        flags = [self.screen.observe(m, score) for m, score in zip(screened, scores, strict=True)]
        self._remember(round_, _JudgedRound(reference, set(screened)))
        flagged = tuple(m for m, flag in zip(screened, flags, strict=True) if flag)
        self.screened_rounds.update(screened)
        self.flagged_rounds.update(flagged)
        return ScreenedRound(round_, screened, flagged)

    def _remember(self, round_: int, judged: _JudgedRound) -> None:
        self._judged[round_] = judged
        mean = judged.reference.aggregate
        size = mean.numel() * mean.element_size()
        while len(self._judged) > 1 and size * len(self._judged) > REFERENCES_BYTES:
            oldest, _ = self._judged.popitem(last=False)
            for key in [key for key in self._late if key[0] == oldest]:
                del self._late[key]


def _accumulate(sums: dict[_Key, torch.Tensor], key: _Key, update: torch.Tensor) -> None:
    total = sums.get(key)
    sums[key] = update.clone() if total is None else total.add_(update)
