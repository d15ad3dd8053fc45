"""Difficulty retargeting toward the configured block time, in integer arithmetic so that every
node computes the same value."""

from __future__ import annotations

from collections.abc import Sequence

from pouw.blockchain.block import BlockHeader
from pouw.blockchain.params import ChainParams

MAX_DIFFICULTY = 2**62
MAX_ADJUSTMENT = 4


def next_difficulty(params: ChainParams, recent: Sequence[BlockHeader]) -> int:
    """The difficulty required of the child of `recent[-1]`.

    `recent` holds the parent and up to `retarget_window` of its ancestors, oldest first. The
    average difficulty of the window is scaled by expected over actual timespan, the timespan
    clamped to a factor of 4 either way so that one odd timestamp cannot swing it far.
    """
    if len(recent) < 2:
        return recent[-1].difficulty if recent else params.initial_difficulty
    window = recent[-(params.retarget_window + 1) :]
    blocks = len(window) - 1
    expected_ms = blocks * params.block_time_ms
    actual_ms = window[-1].timestamp_ms - window[0].timestamp_ms
    actual_ms = min(max(actual_ms, expected_ms // MAX_ADJUSTMENT, 1), expected_ms * MAX_ADJUSTMENT)
    average = sum(header.difficulty for header in window[1:]) // blocks
    return min(max(average * expected_ms // actual_ms, params.min_difficulty), MAX_DIFFICULTY)
