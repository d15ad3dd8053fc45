"""A per-node score from its valid and rejected contributions, as this node has seen them."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    records: dict[str, Record] = field(default_factory=dict)

    def valid(self, address: str) -> None:
        self.records.setdefault(address, Record()).valid += 1

    def rejected(self, address: str) -> None:
        self.records.setdefault(address, Record()).rejected += 1

    def score(self, address: str) -> float:
        return self.records.get(address, Record()).score

    def scores(self) -> dict[str, float]:
        """Every scored node's score, by address."""
        return {address: record.score for address, record in sorted(self.records.items())}
