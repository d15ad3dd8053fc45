"""The roles a node can stake for."""

from __future__ import annotations

from enum import StrEnum


class NodeRole(StrEnum):
    MINER = "MINER"
    SUPERVISOR = "SUPERVISOR"
    VERIFIER = "VERIFIER"
    EVALUATOR = "EVALUATOR"
    PEER = "PEER"

    @classmethod
    def parse(cls, value: str) -> NodeRole:
        try:
            return cls(value.strip().upper())
        except ValueError:
            allowed = ", ".join(role.value for role in cls)
            raise ValueError(f"unknown role {value!r}: must be one of {allowed}") from None
