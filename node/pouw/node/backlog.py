"""Validation and relay come before training: the miner's hold.

A node whose loop cannot keep up with what its peers send (a full import queue) or that is
catching up with a peer's heavier chain would, if it kept mining, seal blocks on a tip the
network has already left: orphans, and under load on a small machine, a node mining alone on
its own branch. So while the backlog passes its bound the miner draws no nonces (the template
source answers None) and pauses training between iterations (the training thread yields the
CPU and the interpreter to the loop that imports and relays), for at most `max_pause_s` at a
time so that a flood of valid items slows a miner down but never stops it for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IMPORT_BACKLOG_BOUND = 8
"""Jobs (gossiped items, sync batches) waiting to be imported above which the miner holds.
An idle node's queue is empty between arrivals; a node that keeps up drains a burst of a
dozen blocks within one iteration or two."""
MAX_PAUSE_S = 2.0
HOLD_POLL_S = 0.02


@dataclass(frozen=True)
class Backlog:
    """What the node has yet to import, as the network reports it."""

    imports: int
    """Jobs waiting in the import queue."""
    catching_up: bool
    """A sync from a peer with more work is under way."""


def should_hold(backlog: Backlog, bound: int = IMPORT_BACKLOG_BOUND) -> bool:
    """The rule: hold while the import backlog passes its bound or the node catches up."""
    return backlog.catching_up or backlog.imports > bound


class MiningHold:
    """The hook the miner role checks (from the training thread) before it draws nonces and
    between iterations; `count(stage)` is told each held iteration (a metric)."""

    def __init__(
        self,
        backlog: Callable[[], Backlog | None],
        count: Callable[[str], None],
        *,
        bound: int = IMPORT_BACKLOG_BOUND,
        max_pause_s: float = MAX_PAUSE_S,
    ) -> None:
        self.backlog = backlog
        self.count = count
        self.bound = bound
        self.max_pause_s = max_pause_s

    def held(self) -> bool:
        backlog = self.backlog()
        return backlog is not None and should_hold(backlog, self.bound)

    def hold_nonces(self) -> bool:
        """Whether this iteration draws no nonces (counted as stage `nonces`)."""
        if self.held():
            self.count("nonces")
            return True
        return False

    def pause_training(self, stop: threading.Event) -> None:
        """Wait while held, at most max_pause_s or until `stop` is set (counted as stage
        `training` when it waits)."""
        if not self.held():
            return
        self.count("training")
        deadline = time.monotonic() + self.max_pause_s
        while self.held() and time.monotonic() < deadline and not stop.wait(HOLD_POLL_S):
            pass
