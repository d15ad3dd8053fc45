"""The draw-bias simulation against its closed form: a withholding producer is drawn with
probability s / (1 - alpha + alpha*s); an honest one with its fair share s."""

from __future__ import annotations

import json
import math

import pytest

from pouw.bench.draw_bias import closed_form, draw_bias, draw_bias_sweep, fair_share


def within(measured: float, expected: float, trials: int, sigmas: float = 4.0) -> bool:
    """`measured`, a rate over `trials`, is within `sigmas` standard errors of `expected`."""
    stderr = math.sqrt(expected * (1.0 - expected) / trials)
    return abs(measured - expected) <= sigmas * stderr


@pytest.mark.parametrize("alpha", [1 / 16, 0.33])
def test_withholding_matches_the_closed_form_and_honesty_gets_the_fair_share(
    alpha: float,
) -> None:
    report = draw_bias(alpha, tickets=64, attacker_tickets=4, miners=1, trials=20_000, seed=7)
    share = report["fair_share"]
    assert share == pytest.approx(4 / 64)
    withholding, honest = report["withholding"], report["honest"]
    assert within(withholding["drawn"], closed_form(alpha, share), 20_000)
    assert report["draw_bias"] == pytest.approx(1 / (1 - alpha * (1 - share)), rel=0.08)
    assert within(honest["drawn"], share, 20_000)
    assert honest["ratio"] == pytest.approx(1.0, abs=0.12)
    expected_withheld = withholding["withheld_closed_form"]
    assert withholding["withheld_per_task"] == pytest.approx(expected_withheld, rel=0.1)


def test_several_seats_use_the_draws_one_seat_per_owner() -> None:
    share = fair_share(tickets=20, attacker_tickets=3, miners=3)
    assert share == pytest.approx(1 - math.comb(17, 3) / math.comb(20, 3))
    report = draw_bias(0.2, tickets=20, attacker_tickets=3, miners=3, trials=10_000, seed=1)
    assert within(report["honest"]["drawn"], share, 10_000)
    assert within(report["withholding"]["drawn"], closed_form(0.2, share), 10_000)


def test_without_hash_power_there_is_nothing_to_withhold() -> None:
    report = draw_bias(0.0, trials=2_000, seed=3)
    assert report["withholding"]["withheld_per_task"] == 0
    assert report["withholding"]["drawn"] == report["honest"]["drawn"]


def test_the_simulation_is_seeded_and_json_ready() -> None:
    first = draw_bias_sweep((0.1, 0.2), trials=500, seed=5)
    assert first == draw_bias_sweep((0.1, 0.2), trials=500, seed=5)
    assert json.loads(json.dumps(first)) == first
    assert first["draw_bias"] == max(row["draw_bias"] for row in first["by_alpha"])


@pytest.mark.parametrize(
    "arguments", [{"alpha": 1.0}, {"alpha": -0.1}, {"attacker_tickets": 0}, {"miners": 0}]
)
def test_impossible_settings_are_refused(arguments: dict[str, float]) -> None:
    settings = {"alpha": 0.1, "attacker_tickets": 4, "miners": 1} | arguments
    with pytest.raises(ValueError):
        draw_bias(
            settings["alpha"], 64, int(settings["attacker_tickets"]), int(settings["miners"]), 10, 0
        )
