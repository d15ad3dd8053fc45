"""Security: Byzantine update attacks (for tests, the devnet and benchmarks) and their screening.

`attacks` says what a Byzantine miner may send; `detection` flags such updates among a round's
updates. Robust aggregation itself lives in `pouw.ml.aggregation`.
"""

from pouw.security.attacks import (
    ATTACKS,
    UPDATE_ATTACKS,
    AttackKind,
    attack_update,
    little_is_enough_z,
)
from pouw.security.detection import ScreenedAggregator, SenderScreen, UpdateScreen

__all__ = [
    "ATTACKS",
    "UPDATE_ATTACKS",
    "AttackKind",
    "ScreenedAggregator",
    "SenderScreen",
    "UpdateScreen",
    "attack_update",
    "little_is_enough_z",
]
