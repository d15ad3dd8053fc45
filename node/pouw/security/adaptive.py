"""Attackers who know the defence: ALIE's and IPM's directions at the strength the defence
lets through furthest (the AGR-tailored attacks of Shejwalkar and Houmansadr, NDSS 2021).

Each round the attackers see every honest update (the strongest attacker the literature
assumes), take a direction (ALIE: minus the coordinate-wise standard deviation from the
honest mean; IPM: minus the honest mean itself), and try every strength of STRENGTHS on a
copy of the defence (`Defence.probe`: with its history, or fresh). They all send the candidate
that moves the aggregate furthest from the honest mean among those the screen does not flag;
when the screen flags every one, the honest mean (they wait, unflagged, for a better round).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pouw.security.attacks import ADAPTIVE_ATTACKS

STRENGTHS = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0, 100.0)
"""ALIE: standard deviations from the mean; IPM: multiples of minus the mean."""

Probe = Callable[[torch.Tensor], tuple[torch.Tensor, bool]]
"""The aggregate if every attacker sent this update, and whether the screen flags any."""


def candidate(kind: str, honest: Sequence[torch.Tensor], strength: float) -> torch.Tensor:
    """The update `kind`'s attackers send at `strength`."""
    base, step = _line(kind, honest)
    return base + strength * step


def adaptive_update(kind: str, honest: Sequence[torch.Tensor], probe: Probe) -> torch.Tensor:
    """The update that moves the aggregate furthest from the honest mean unflagged."""
    if not honest:
        raise ValueError("an adaptive attacker needs the honest updates of the round")
    base, step = _line(kind, honest)
    mean = torch.stack(list(honest)).mean(dim=0)
    best, furthest = mean, -1.0
    for strength in STRENGTHS:
        update = base + strength * step
        aggregate, flagged = probe(update)
        deviation = float((aggregate - mean).norm())
        if not flagged and deviation > furthest:
            best, furthest = update, deviation
    return best


def _line(kind: str, honest: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`kind`'s candidates as base + strength * step (ALIE: the mean minus standard deviations;
    IPM: minus the mean)."""
    stacked = torch.stack(list(honest))
    mean = stacked.mean(dim=0)
    if kind.startswith("adaptive_alie"):
        spread = stacked.std(dim=0) if len(stacked) > 1 else torch.zeros_like(mean)
        return mean, -spread
    if kind.startswith("adaptive_ipm"):
        return torch.zeros_like(mean), -mean
    raise ValueError(f"{kind!r} is not adaptive: one of {', '.join(ADAPTIVE_ATTACKS)}")
