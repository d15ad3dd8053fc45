"""What a node shows of itself: plain values the API serialises and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskPhase = Literal["pending", "training", "evaluating", "completed", "failed"]


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
    created_height: int
    miners: list[str] = field(default_factory=list)
    progress: list[MinerProgress] = field(default_factory=list)
    blocks: int = 0
    test_accuracy: float | None = None
    best_model_hash: str | None = None
    model_available: bool = False
    message: str = ""


@dataclass(frozen=True)
class TicketView:
    ticket_id: str
    role: str
    amount: float
    owner: str
    confirmed: bool


@dataclass(frozen=True)
class HealthMetrics:
    """The seed's health fields: response_time in ms, success_rate in [0, 1], usage in %."""

    response_time: float
    success_rate: float
    cpu_usage: float
    memory_usage: float
    healthy: bool
