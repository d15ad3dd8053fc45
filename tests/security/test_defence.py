"""The defence in front of a task's model: degenerate updates left out, every round bounded by
the honest majority, the screen's history unable to buy a large step (pouw.security.defence)."""

from __future__ import annotations

import pytest
import torch

from pouw.ml.aggregation import (
    RobustAggregator,
    adaptive_clip,
    lift_short,
    nearest_neighbour_mixing,
)
from pouw.security.defence import Defence, assumed_byzantine

SIZE = 512
HONEST = 5
SENDERS = list(range(HONEST + 2))


def honest_round(seed: int, mean: float = 0.05) -> list[torch.Tensor]:
    """Five honest updates: a shared direction and minibatch noise around it."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.full((SIZE,), mean)
    return [direction + 0.1 * torch.randn(SIZE, generator=generator) for _ in range(HONEST)]


def longest(updates: list[torch.Tensor]) -> float:
    return max(float(update.norm()) for update in updates)


def test_nan_infinite_and_misshapen_updates_are_left_out_and_flagged() -> None:
    honest = honest_round(0)
    nan = honest[0].clone()
    nan[3] = float("nan")
    infinite = honest[0].clone()
    infinite[7] = float("inf")
    short = torch.zeros(SIZE - 1)
    defence = Defence(SIZE, byzantine=2)
    verdict = defence.aggregate(list(range(8)), [*honest, nan, infinite, short])
    assert verdict.degenerate == (False,) * 5 + (True, True, True)
    assert verdict.flagged[5:] == (True, True, True)
    assert bool(torch.isfinite(verdict.aggregate).all())
    assert float(verdict.aggregate.norm()) <= longest(honest) + 1e-4


def test_only_degenerate_updates_move_nothing() -> None:
    nan = torch.full((SIZE,), float("nan"))
    verdict = Defence(SIZE, byzantine=1).aggregate([0, 1], [nan, torch.zeros(3)])
    assert torch.equal(verdict.aggregate, torch.zeros(SIZE))
    assert verdict.flagged == (True, True)


def test_a_zero_update_is_a_vote_for_not_moving_and_banks_no_credit() -> None:
    """The banking attack of the issue: six zero rounds (once scored as perfectly aligned)
    and then one enormous update against the mean. The zero rounds are kept as votes, the
    large one is flagged at once, and the round moves no further than an honest update."""
    defence = Defence(SIZE, byzantine=2)
    for round_ in range(6):
        honest = honest_round(round_)
        verdict = defence.aggregate(SENDERS, [*honest, torch.zeros(SIZE), torch.zeros(SIZE)])
        assert verdict.degenerate == (False,) * 7
    honest = honest_round(6)
    mean = torch.stack(honest).mean(dim=0)
    bomb = -5.2e6 * mean
    verdict = defence.aggregate(SENDERS, [*honest, bomb, bomb])
    assert verdict.flagged[5:] == (True, True)
    assert float(verdict.aggregate.norm()) <= longest(honest) + 1e-4
    assert float(verdict.aggregate @ mean) > 0, "still a step along the honest direction"


def test_what_the_screen_misses_is_bounded_by_the_honest_majority() -> None:
    """With no screen at all, f attackers of any length and direction move the aggregate no
    further than the longest honest update, and not far from the honest mean."""
    honest = honest_round(1)
    mean = torch.stack(honest).mean(dim=0)
    for attack in (-1e9 * mean, 1e9 * torch.ones(SIZE), mean - 3 * torch.stack(honest).std(0)):
        aggregate = RobustAggregator(2).aggregate([*honest, attack, attack])
        assert float(aggregate.norm()) <= longest(honest) + 1e-4
        spread = max(float((update - mean).norm()) for update in honest)
        assert float((aggregate - mean).norm()) <= spread


def test_adaptive_clipping_takes_its_radius_from_the_honest_majority() -> None:
    honest = honest_round(2)
    stacked = torch.stack([*honest, 1e6 * honest[0], 1e6 * honest[1]])
    clipped, radius = adaptive_clip(stacked, byzantine=2)
    assert radius <= longest(honest)
    assert float(clipped.norm(dim=1).max()) <= radius * (1 + 1e-6)


def test_a_short_update_is_lifted_to_the_median_length_and_no_longer_everyones_nearest() -> None:
    """Long noisy honest updates and two short ones against their mean (IPM): unlifted, the
    short ones are every honest update's nearest neighbours; lifted, they are not."""
    honest = torch.stack(honest_round(3, mean=0.01))
    short = -0.5 * honest.mean(dim=0)
    stacked = torch.cat([honest, short.expand(2, -1)])
    distances = torch.cdist(stacked, stacked)[:HONEST].fill_diagonal_(float("inf"))
    assert set(distances.argmin(dim=1).tolist()) <= {5, 6}
    lifted = lift_short(stacked)
    median = float(stacked.norm(dim=1).median())
    assert float(lifted[5].norm()) == pytest.approx(median, rel=1e-5)
    assert torch.equal(lift_short(torch.zeros(3, 4)), torch.zeros(3, 4)), "zero stays zero"
    distances = torch.cdist(lifted, lifted)[:HONEST].fill_diagonal_(float("inf"))
    assert not set(distances.argmin(dim=1).tolist()) <= {5, 6}


def test_nearest_neighbour_mixing_averages_each_with_its_nearest() -> None:
    stacked = torch.tensor([[0.0], [1.0], [2.0], [100.0]])
    mixed = nearest_neighbour_mixing(stacked, byzantine=1)
    assert mixed.squeeze(1).tolist() == pytest.approx([1.0, 1.0, 1.0, 103 / 3])


def test_copies_of_one_update_are_one_vote() -> None:
    """Mimic (Karimireddy et al. 2022): two attackers resend an honest miner's update to weigh
    it three times; the defence counts it once."""
    honest = honest_round(4)
    copied = Defence(SIZE, byzantine=2).aggregate(SENDERS, [*honest, honest[0], honest[0]])
    alone = Defence(SIZE, byzantine=2).aggregate(SENDERS[:HONEST], honest)
    assert torch.equal(copied.aggregate, alone.aggregate)
    assert copied.flagged == (False,) * len(SENDERS)


def test_probing_changes_nothing_and_a_fresh_probe_forgets_the_history() -> None:
    defence = Defence(SIZE, byzantine=2)
    for round_ in range(12):
        honest = honest_round(round_)
        defence.aggregate(SENDERS, [*honest, -honest[0], -honest[1]])
    history = {sender: defence.screen.direction(sender) for sender in SENDERS}
    assert history[5] is not None and history[5] < 0
    honest = honest_round(20)
    # After a history of flipped updates, even an honest-looking update is judged by it.
    remembered = defence.probe(SENDERS, [*honest, honest[0], honest[1]])
    fresh = defence.probe(SENDERS, [*honest, honest[0], honest[1]], fresh=True)
    assert remembered.flagged[5:] == (True, True)
    assert fresh.flagged[5:] == (False, False)
    assert {sender: defence.screen.direction(sender) for sender in SENDERS} == history


def test_a_task_assumes_the_most_attackers_under_a_third() -> None:
    assert [assumed_byzantine(n) for n in (1, 2, 3, 4, 7, 10, 13)] == [1, 1, 1, 1, 2, 3, 4]
