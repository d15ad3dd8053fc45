"""Peer bookkeeping: links, token-bucket rate limits and ban scores."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pouw.network.messages import ChainInfo

BAN_SCORES: dict[str, int] = {
    "oversized": 50,
    "malformed": 20,
    "bad_signature": 50,
    "unknown_type": 10,
    "bad_version": 10,
    "wrong_chain": 100,
    "rate_limited": 2,
    "unsolicited": 1,
    "impersonation": 100,
}
ITEM_REJECTION_SCORE = 25
"""A block, transaction or message that its handler rejected (bad work, bad signature...)."""


def ban_score(reason: str) -> int:
    return BAN_SCORES.get(reason, ITEM_REJECTION_SCORE)


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Link:
    """One connection: outbound (our DEALER) or inbound (a routing id on our ROUTER)."""

    direction: str
    send: Callable[[bytes], Awaitable[None]]
    bucket: TokenBucket
    address: tuple[str, int] | None = None
    routing_id: bytes | None = None
    peer_key: bytes | None = None
    chain: ChainInfo | None = None
    listen: tuple[str, int] | None = None
    score: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    closed: bool = False

    @property
    def ready(self) -> bool:
        """The peer said a valid hello on this link."""
        return self.peer_key is not None and not self.closed


@dataclass(frozen=True)
class PeerInfo:
    node_key: str
    address: str
    direction: str
    ban_score: int
    seconds_since_seen: float
    height: int


class BanList:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[object, float] = {}

    def ban(self, *subjects: object) -> None:
        until = time.monotonic() + self.seconds
        for subject in subjects:
            if subject is not None:
                self._until[subject] = until

    def banned(self, subject: object) -> bool:
        until = self._until.get(subject)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[subject]
            return False
        return True
