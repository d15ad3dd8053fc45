"""Each attack changes an update as promised (pouw.security.attacks)."""

from __future__ import annotations

import statistics

import pytest
import torch
from rich.console import Console

from pouw.security.adaptive import STRENGTHS, adaptive_update, candidate
from pouw.security.attacks import (
    ADAPTIVE_ATTACKS,
    ATTACKS,
    IPM_EPSILON,
    NOISE_FACTOR,
    SCALE_FACTOR,
    SIGN_FLIP_FACTOR,
    TRAINER_ATTACKS,
    attack_update,
    flip_labels,
    little_is_enough_z,
)


def honest_update(size: int = 4096, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed))


def generator(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_the_attack_lists_match_the_shared_contract() -> None:
    assert ATTACKS == (
        "sign_flip",
        "scale",
        "noise",
        "little_is_enough",
        "ipm",
        "mimic",
        "label_flip",
        "adaptive_alie",
        "adaptive_alie_fresh",
        "adaptive_ipm",
        "adaptive_ipm_fresh",
        "fake_work",
        "stale_model",
    )
    assert set(ADAPTIVE_ATTACKS) | set(TRAINER_ATTACKS) < set(ATTACKS)


def test_the_configuration_accepts_exactly_these_attacks() -> None:
    """pouw.config keeps its own copy (it sits below torch); the two must not drift."""
    from pouw import config

    assert config.ATTACKS == ATTACKS


def test_sign_flip_reverses_the_update() -> None:
    honest = honest_update()
    flipped = attack_update("sign_flip", honest, generator=generator())
    assert torch.equal(flipped, -SIGN_FLIP_FACTOR * honest)
    assert cosine(flipped, honest) == pytest.approx(-1.0)


def test_scale_boosts_the_update() -> None:
    honest = honest_update()
    boosted = attack_update("scale", honest, generator=generator())
    assert torch.equal(boosted, SCALE_FACTOR * honest)
    assert float(boosted.norm()) == pytest.approx(SCALE_FACTOR * float(honest.norm()), rel=1e-5)


@pytest.mark.parametrize(("kind", "factor"), [("noise", NOISE_FACTOR), ("fake_work", 1.0)])
def test_noise_and_fake_work_are_random_directions_of_a_fixed_norm(
    kind: str, factor: float
) -> None:
    honest = honest_update()
    forged = attack_update(kind, honest, generator=generator())
    assert float(forged.norm()) == pytest.approx(factor * float(honest.norm()), rel=1e-5)
    assert abs(cosine(forged, honest)) < 0.1, "4096 random dimensions are nearly orthogonal"
    again = attack_update(kind, honest, generator=generator())
    assert torch.equal(forged, again), "the generator makes it reproducible"
    other = attack_update(kind, honest, generator=generator(2))
    assert not torch.equal(forged, other)


def test_stale_model_passes_the_update_through_unchanged() -> None:
    honest = honest_update()
    stale = attack_update("stale_model", honest, generator=generator())
    assert torch.equal(stale, honest)
    assert stale is not honest


def test_little_is_enough_shifts_the_mean_by_z_standard_deviations() -> None:
    peers = [honest_update(256, seed) for seed in range(7)]
    stacked = torch.stack(peers)
    crafted = attack_update(
        "little_is_enough", peers[0], peers=peers, generator=generator(), workers=7, byzantine=2
    )
    z = little_is_enough_z(7, 2)
    expected = stacked.mean(dim=0) - z * stacked.std(dim=0)
    assert torch.allclose(crafted, expected)
    # Inside the honest spread: closer to the peers' mean than a typical honest update is.
    typical = statistics.median(float((p - stacked.mean(dim=0)).norm()) for p in peers)
    assert float((crafted - stacked.mean(dim=0)).norm()) < typical


def test_ipm_sends_a_small_step_against_the_peers_mean() -> None:
    peers = [honest_update(256, seed) + 1.0 for seed in range(5)]
    mean = torch.stack(peers).mean(dim=0)
    crafted = attack_update("ipm", peers[0], peers=peers, generator=generator())
    assert torch.allclose(crafted, -IPM_EPSILON * mean)
    assert float(crafted @ mean) < 0
    assert float(crafted.norm()) < min(float(p.norm()) for p in peers), "short: looks harmless"


def test_mimic_copies_the_same_honest_peer() -> None:
    peers = [honest_update(256, seed) for seed in range(5)]
    crafted = attack_update("mimic", honest_update(256, 9), peers=peers, generator=generator())
    assert torch.equal(crafted, peers[0])
    assert crafted is not peers[0]


def test_label_flip_reads_every_class_as_another() -> None:
    labels = torch.arange(10)
    flipped = flip_labels(labels, 10)
    assert flipped.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert not bool((flipped == labels).any())
    assert torch.equal(attack_update("label_flip", labels.float(), generator=generator()), labels)


def test_adaptive_attacks_need_a_defence_to_search() -> None:
    with pytest.raises(ValueError, match=r"pouw\.security\.adaptive"):
        attack_update("adaptive_ipm", honest_update(), generator=generator())


@pytest.mark.parametrize("kind", ADAPTIVE_ATTACKS)
def test_the_adaptive_attacker_sends_the_strongest_update_the_screen_passes(kind: str) -> None:
    """Against a probe that lets through any strength up to 2 (and averages plainly), the
    attacker picks strength 2 exactly: further than all weaker ones, and unflagged."""
    peers = [honest_update(256, seed) + 1.0 for seed in range(5)]
    tried: list[float] = []

    def probe(update: torch.Tensor) -> tuple[torch.Tensor, bool]:
        strength = next(s for s in STRENGTHS if torch.equal(candidate(kind, peers, s), update))
        tried.append(strength)
        return torch.stack([*peers, update, update]).mean(dim=0), strength > 2.0

    chosen = adaptive_update(kind, peers, probe)
    assert tried == list(STRENGTHS)
    assert torch.equal(chosen, candidate(kind, peers, 2.0))


def test_an_adaptive_attacker_the_screen_flags_at_every_strength_sends_the_mean() -> None:
    peers = [honest_update(256, seed) for seed in range(5)]
    chosen = adaptive_update("adaptive_alie", peers, lambda update: (update, True))
    assert torch.allclose(chosen, torch.stack(peers).mean(dim=0))


def test_little_is_enough_without_peers_sends_the_honest_update() -> None:
    honest = honest_update()
    assert torch.equal(attack_update("little_is_enough", honest, generator=generator()), honest)


def test_little_is_enough_z_follows_baruch_et_al() -> None:
    # n = 7, f = 2: s = floor(7/2 + 1) - 2 = 2, z = Phi^-1(5/7).
    assert little_is_enough_z(7, 2) == pytest.approx(statistics.NormalDist().inv_cdf(5 / 7))
    assert little_is_enough_z(7, 2) == pytest.approx(0.566, abs=1e-3)
    # n = 50, f = 24 (the paper's example): s = 2, z = Phi^-1(48/50) ~ 1.75.
    assert little_is_enough_z(50, 24) == pytest.approx(1.751, abs=1e-3)
    assert little_is_enough_z(3, 0) == 0.0, "nothing to hide behind: send the mean"
    with pytest.raises(ValueError, match="majority"):
        little_is_enough_z(7, 4)
    with pytest.raises(ValueError, match="byzantine"):
        little_is_enough_z(3, 3)


def test_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        attack_update("bit_flip", honest_update(), generator=generator())


def test_the_attacks_bench_reports_every_attack_in_both_units_and_settings() -> None:
    """A short run of `pouw bench attacks` (figures need its full length; this checks the
    shape, and that forged blocks are rejected and honest ones are not)."""
    from pouw.bench import attacks as bench

    lines: list[str] = []
    result = bench.run(
        lines.append,
        rounds={"gradients": 6, "sums": 2},
        seeds=1,
        processes=1,
        blocks_per_miner=2,
    )
    assert result["bench"] == "attacks"
    assert set(result["results"]) == {"gradients", "sums"}
    for sections in result["results"].values():
        assert set(sections) == {"n7_f2", "n10_f3"}
        for section in sections.values():
            base = section["baselines"]
            for name in ("honest_all", "honest_only", "defence"):
                assert 0.0 <= base[f"{name}_accuracy"] <= 1.0
                assert len(base["per_seed"][name]) == 1
            assert set(section["attacks"]) == set(ATTACKS)
            for row in section["attacks"].values():
                assert len(row["protected_per_seed"]) == 1
                for key in ("protected", "unprotected"):
                    assert 0.0 <= row[f"{key}_accuracy"] <= 1.0
                assert 0.0 <= row["detection_rate"] <= 1.0
                assert 0.0 <= row["false_positive_rate"] <= 1.0
            fake_work = section["attacks"]["fake_work"]
            assert fake_work["detection_rate"] == 1.0
            assert fake_work["false_positive_rate"] == 0.0
            assert section["attacks"]["scale"]["detection_rate"] == 1.0
    assert result["fake_work_blocks"]["forged"] == 4
    assert isinstance(result["targets_met"], bool)
    console = Console(record=True, width=160)
    console.print(bench.results_table(result))
    text = console.export_text()
    assert "sums, n10_f3" in text
    first = result["results"]["gradients"]["n7_f2"]["attacks"]
    rows = text.splitlines()
    for kind in ATTACKS:
        row = next(line for line in rows if line.startswith(f"│ {kind} "))
        assert f"{first[kind]['protected_accuracy']:.4f}" in row
