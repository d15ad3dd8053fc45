"""How many nonces one iteration may try, and how they are derived from its precursor.

    n = max(1, floor(omega_b * batch_size + omega_m * model_size))

omega_b and omega_m are consensus parameters (ChainParams): hash work is bounded by useful
work. A node's POUW_MINING_INTENSITY is the fraction of that budget it spends (1 spends it
all); every iteration tries at least one nonce.
"""

from __future__ import annotations

import hashlib
import math

OVER_BUDGET_SEARCH = 4096
"""How far past the budget a verifier looks to tell 'over budget' from 'not derived'."""


def nonce_budget(omega_b: float, omega_m: float, batch_size: int, model_size: int) -> int:
    return max(1, math.floor(omega_b * batch_size + omega_m * model_size))


def node_budget(allowed: int, intensity: float) -> int:
    return max(1, min(allowed, math.floor(allowed * intensity)))


def derive_nonce(precursor: bytes, index: int) -> int:
    digest = hashlib.sha256(precursor + index.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def nonce_index(precursor: bytes, nonce: int, search_limit: int) -> int | None:
    """The index whose derived nonce is `nonce`, searching indices below `search_limit`."""
    for index in range(search_limit):
        if derive_nonce(precursor, index) == nonce:
            return index
    return None
