from __future__ import annotations

import pytest
import torch

from pouw.ml.aggregation import (
    AGGREGATORS,
    Aggregator,
    CoordinateMedianAggregator,
    MeanAggregator,
    MultiKrumAggregator,
    TrimmedMeanAggregator,
    copies,
    make_aggregator,
)


def honest_and_byzantine() -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    truth = torch.randn(200, generator=generator)
    honest = [truth + 0.05 * torch.randn(200, generator=generator) for _ in range(7)]
    return [*honest, -truth, truth * 100], truth


@pytest.mark.parametrize(
    "aggregator",
    [CoordinateMedianAggregator(), TrimmedMeanAggregator(0.25), MultiKrumAggregator(byzantine=2)],
    ids=["median", "trimmed_mean", "krum"],
)
def test_robust_aggregators_resist_two_attackers(aggregator: Aggregator) -> None:
    updates, _ = honest_and_byzantine()
    honest_mean = MeanAggregator().aggregate(updates[:7])
    robust = aggregator.aggregate(updates)
    naive = MeanAggregator().aggregate(updates)
    assert (robust - honest_mean).norm() < 0.1 * honest_mean.norm()
    assert (robust - honest_mean).norm() * 50 < (naive - honest_mean).norm()


def test_krum_selects_only_honest_updates() -> None:
    updates, _ = honest_and_byzantine()
    assert MultiKrumAggregator(byzantine=2).select(updates) == list(range(7))
    assert len(MultiKrumAggregator(byzantine=2, selected=3).select(updates)) == 3


def test_krum_falls_back_to_the_median_when_too_few_updates() -> None:
    updates = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 4.0]), torch.tensor([9.0, 5.0])]
    assert torch.equal(
        MultiKrumAggregator(byzantine=1).aggregate(updates), torch.tensor([2.0, 4.0])
    )
    with pytest.raises(ValueError, match="n > f"):
        MultiKrumAggregator(byzantine=1).select(updates)


def test_median_and_trimmed_mean_per_coordinate() -> None:
    updates = [torch.tensor([v, -v]) for v in (1.0, 2.0, 3.0, 100.0)]
    assert torch.equal(CoordinateMedianAggregator().aggregate(updates), torch.tensor([2.5, -2.5]))
    assert torch.equal(TrimmedMeanAggregator(0.25).aggregate(updates), torch.tensor([2.5, -2.5]))
    assert torch.equal(TrimmedMeanAggregator(0.5).aggregate(updates[:3]), torch.tensor([2.0, -2.0]))


@pytest.mark.parametrize("name", AGGREGATORS)
def test_a_single_update_is_returned_as_is(name: str) -> None:
    update = torch.arange(5, dtype=torch.float32)
    assert torch.equal(make_aggregator(name).aggregate([update]), update)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_empty_input_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="nothing"):
        make_aggregator(name).aggregate([])


def test_errors() -> None:
    with pytest.raises(
        ValueError, match="one of robust, screened_mean, mean, median, trimmed_mean, krum"
    ):
        make_aggregator("average")
    with pytest.raises(ValueError, match="one length"):
        MeanAggregator().aggregate([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="trim_fraction"):
        TrimmedMeanAggregator(0.6)
    with pytest.raises(ValueError, match="byzantine"):
        MultiKrumAggregator(byzantine=-1)


def test_copies_are_the_later_updates_equal_bit_for_bit_to_an_earlier_one() -> None:
    update = torch.arange(6, dtype=torch.float32)
    near = update.clone()
    near[5] += 1e-6
    assert copies([update, update.clone(), near, near.clone(), torch.zeros(6)]) == [
        False,
        True,
        False,
        True,
        False,
    ]
