"""What a node shows of itself: plain values the API serialises and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pouw.monitoring.health import HealthMetrics

__all__ = ["HealthMetrics", "MinerProgress", "TaskPhase", "TaskView", "TicketView"]

TaskPhase = Literal["pending", "training", "evaluating", "completed", "failed", "refunded"]


@dataclass(frozen=True)
class MinerProgress:
    miner: str
    epoch: int
    iterations: int
    loss: float
    accuracy: float
    finished: bool


@dataclass(frozen=True)
class TaskView:
    task_id: str
    phase: TaskPhase
    client: str
    reward: float
    epochs: int
    dataset: str
    min_accuracy: float
    created_height: int | None
    """The height of the block holding the payment; None while it waits in the mempool."""
    miners: list[str] = field(default_factory=list)
    progress: list[MinerProgress] = field(default_factory=list)
    blocks: int = 0
    test_accuracy: float | None = None
    best_model_hash: str | None = None
    model_available: bool = False
    message: str = ""
    ranking: list[str] = field(default_factory=list)
    """The miners the evaluator ranked, best first (those it left out are absent)."""


@dataclass(frozen=True)
class TicketView:
    ticket_id: str
    role: str
    amount: float
    owner: str
    confirmed: bool
