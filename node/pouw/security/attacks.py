"""What a Byzantine miner may send in place of its honest update.

Every attack takes the update the attacker would have sent honestly (a flat float vector) and
returns the one it sends instead:

- ``sign_flip``: ``-SIGN_FLIP_FACTOR * honest``, ascent instead of descent (the "reverse
  gradient" attack of Damaskinos et al. 2018; Fang et al. 2020 study its stronger variants).
- ``scale``: ``SCALE_FACTOR * honest``, boosting (Bhagoji et al. 2019, "Analyzing federated
  learning through an adversarial lens"), so the attacker's vote dominates a plain mean.
- ``noise``: a Gaussian vector whose norm is ``NOISE_FACTOR`` times the honest norm (the
  Gaussian attack of Blanchard et al. 2017, "Machine learning with adversaries").
- ``little_is_enough``: ``mean(peers) - z * std(peers)`` coordinate-wise (Baruch, Baruch and
  Goldberg 2019, "A little is enough: circumventing defenses for distributed learning"): a
  small shift inside the honest spread, so the median and Krum keep choosing it. ``z`` is the
  paper's largest value that still hides the attackers:
  ``s = floor(n / 2 + 1) - f``, ``z = Phi^-1((n - s) / n)``.
- ``ipm``: ``-IPM_EPSILON * mean(peers)`` (inner-product manipulation, Xie, Koyejo and Gupta
  2020, "Fall of empires"): small enough to pass distance-based defences, it turns the
  aggregate's inner product with the true gradient towards negative.
- ``mimic``: a copy of one honest peer's update, the same peer every round (Karimireddy, He
  and Jaggi 2022): it over-weights that peer's data and cannot be told from honest work.
- ``label_flip``: honest work on wrong labels (class ``c`` read as ``classes - 1 - c``, Biggio
  et al. 2012). Like stale_model, the trainer computes it (`flip_labels`).
- ``adaptive_alie`` and ``adaptive_ipm``: ALIE's and IPM's direction at the strength that
  moves the defence's aggregate furthest while the screen still passes the attackers, searched
  every round on a copy of the defence with its history (the AGR-tailored attacks of
  Shejwalkar and Houmansadr 2021); the ``_fresh`` variants search on a fresh copy, without
  the history. `pouw.security.adaptive` makes them.
- ``stale_model``: an honest update computed from the model of ``k`` rounds ago (a lazy miner
  replaying old work). It cannot be made from the current update, so the trainer computes it
  from its old model; ``attack_update`` returns the update it is given unchanged.
- ``fake_work``: a claimed iteration that was never run, here a random vector of the honest
  norm. Its defence is not screening (it can look plausible) but re-execution: a verifier
  re-runs the claimed iteration from the start model and batch in the block
  (`pouw.mining.verify`) and rejects the block, whose signed IT_RES then is slashing evidence.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from pouw.config import ATTACKS, AttackKind

ADAPTIVE_ATTACKS: tuple[AttackKind, ...] = (
    "adaptive_alie",
    "adaptive_alie_fresh",
    "adaptive_ipm",
    "adaptive_ipm_fresh",
)
"""Attacks that need the defence to search against (`pouw.security.adaptive`)."""
TRAINER_ATTACKS: tuple[AttackKind, ...] = ("label_flip", "stale_model")
"""Attacks the trainer makes by computing other gradients; `attack_update` leaves them be."""

SIGN_FLIP_FACTOR = 1.0
SCALE_FACTOR = 10.0
NOISE_FACTOR = 3.0
IPM_EPSILON = 0.5
STALE_ROUNDS = 20


def flip_labels(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """label_flip's labels: class c read as classes - 1 - c."""
    return classes - 1 - labels


def little_is_enough_z(workers: int, byzantine: int) -> float:
    """Baruch et al.'s z_max for `byzantine` attackers among `workers`: the largest shift, in
    standard deviations, that still leaves the s = floor(n/2 + 1) - f honest workers the
    attackers need on their side farther from the mean than the attackers' value. Too few
    attackers to hide anything (a negative z) give 0: they send the mean."""
    if workers < 1 or not 0 <= byzantine < workers:
        raise ValueError(f"need 0 <= byzantine < workers, got {byzantine} of {workers}")
    needed = math.floor(workers / 2 + 1) - byzantine
    quantile = (workers - needed) / workers
    if quantile <= 0.5:
        return 0.0
    if quantile >= 1.0:
        raise ValueError(f"{byzantine} of {workers} is a Byzantine majority: z is unbounded")
    return statistics.NormalDist().inv_cdf(quantile)


def attack_update(
    kind: str,
    honest: torch.Tensor,
    *,
    peers: Sequence[torch.Tensor] = (),
    generator: torch.Generator,
    workers: int | None = None,
    byzantine: int | None = None,
) -> torch.Tensor:
    """The update an attacker of `kind` sends instead of `honest` (see the module docstring).

    `peers` are the honest updates the attacker has seen (little_is_enough, ipm and mimic use
    them; with none they send `honest`). `workers` and `byzantine` fix little_is_enough's z;
    they default to ``len(peers) + 1`` and the largest f < n/3.
    """
    if kind == "sign_flip":
        return -SIGN_FLIP_FACTOR * honest
    if kind == "scale":
        return SCALE_FACTOR * honest
    if kind in ("noise", "fake_work"):
        factor = NOISE_FACTOR if kind == "noise" else 1.0
        direction = torch.randn(
            honest.shape, generator=generator, dtype=honest.dtype, device=honest.device
        )
        norm = float(direction.norm())
        return direction * (factor * float(honest.norm()) / norm) if norm > 0 else direction
    if kind == "little_is_enough":
        if not peers:
            return honest.clone()
        n = workers if workers is not None else len(peers) + 1
        f = byzantine if byzantine is not None else max(0, (n - 1) // 3)
        stacked = torch.stack(list(peers))
        spread = stacked.std(dim=0) if len(peers) > 1 else torch.zeros_like(honest)
        return stacked.mean(dim=0) - little_is_enough_z(n, f) * spread
    if kind == "ipm":
        if not peers:
            return honest.clone()
        return -IPM_EPSILON * torch.stack(list(peers)).mean(dim=0)
    if kind == "mimic":
        return (peers[0] if peers else honest).clone()
    if kind in TRAINER_ATTACKS:
        return honest.clone()
    if kind in ADAPTIVE_ATTACKS:
        raise ValueError(f"{kind} searches against a defence: use pouw.security.adaptive")
    raise ValueError(f"unknown attack {kind!r}: one of {', '.join(ATTACKS)}")
