from __future__ import annotations

import pytest
import torch

from pouw.ml.aggregation import (
    CoordinateMedianAggregator,
    MeanAggregator,
    MultiKrumAggregator,
    TrimmedMeanAggregator,
    anomaly_scores,
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
def test_robust_aggregators_resist_two_attackers(aggregator: object) -> None:
    updates, truth = honest_and_byzantine()
    robust = aggregator.aggregate(updates)  # type: ignore[attr-defined]
    naive = MeanAggregator().aggregate(updates)
    assert (robust - truth).norm() < 0.2 * truth.norm()
    assert (robust - truth).norm() * 20 < (naive - truth).norm()


def test_krum_selects_only_honest_updates() -> None:
    updates, _ = honest_and_byzantine()
    assert MultiKrumAggregator(byzantine=2).select(updates) == list(range(7))


def test_anomaly_scores_flag_sign_flip_and_scale() -> None:
    updates, _ = honest_and_byzantine()
    flags = [score.suspicious for score in anomaly_scores(updates)]
    assert flags == [False] * 7 + [True, True]


@pytest.mark.parametrize("name", ["mean", "median", "trimmed_mean", "krum"])
def test_a_single_update_is_returned_as_is(name: str) -> None:
    update = torch.arange(5, dtype=torch.float32)
    assert torch.equal(make_aggregator(name).aggregate([update]), update)


def test_errors() -> None:
    with pytest.raises(ValueError, match="one of"):
        make_aggregator("average")
    with pytest.raises(ValueError, match="nothing"):
        MeanAggregator().aggregate([])
