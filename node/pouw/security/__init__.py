"""Security: Byzantine update attacks (for tests, the devnet and benchmarks), their screening,
and the defence a task's miners apply to their peers' updates.

`attacks` and `adaptive` say what a Byzantine miner may send; `detection` flags such updates
among a round's; `defence` combines a round's updates so that what the screen misses moves the
model no further than the honest majority allows. The robust aggregators themselves live in
`pouw.ml.aggregation`.
"""

from pouw.config import ATTACKS, AttackKind
from pouw.security.attacks import (
    ADAPTIVE_ATTACKS,
    TRAINER_ATTACKS,
    attack_update,
    little_is_enough_z,
)
from pouw.security.defence import Defence, Verdict
from pouw.security.detection import SenderScreen

__all__ = [
    "ADAPTIVE_ATTACKS",
    "ATTACKS",
    "TRAINER_ATTACKS",
    "AttackKind",
    "Defence",
    "SenderScreen",
    "Verdict",
    "attack_update",
    "little_is_enough_z",
]
