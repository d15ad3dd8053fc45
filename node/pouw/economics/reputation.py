"""A per-node score from its valid and rejected contributions, as this node has seen them."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachetools import LRUCache

MAX_SCORED = 10_000
"""Nodes scored at most: the least recently scored is forgotten first (a stranger again), so
blocks signed by ever new keys cannot grow the table without bound."""


@dataclass
class Record:
    valid: int = 0
    rejected: int = 0

    @property
    def score(self) -> float:
        """Laplace-smoothed share of valid contributions: 0.5 for a stranger."""
        return (self.valid + 1) / (self.valid + self.rejected + 2)


@dataclass
class Reputation:
    records: LRUCache[str, Record] = field(default_factory=lambda: LRUCache(MAX_SCORED))

    def valid(self, address: str) -> None:
        self.records.setdefault(address, Record()).valid += 1

    def rejected(self, address: str) -> None:
        self.records.setdefault(address, Record()).rejected += 1

    def score(self, address: str) -> float:
        return self.records.get(address, Record()).score

    def scores(self) -> dict[str, float]:
        """Every scored node's score, by address."""
        return {address: record.score for address, record in sorted(self.records.items())}
