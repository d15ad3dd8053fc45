"""A NodeService without a chain: enough state to drive every route."""

from __future__ import annotations

from typing import Any

from pouw.blockchain.errors import InvalidTransaction
from pouw.blockchain.task_spec import TaskSpec
from pouw.monitoring.health import HealthMetrics, HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.node.views import TaskView, TicketView
from pouw.roles import NodeRole

TASK_ID = "ab" * 32


class FakeNode:
    def __init__(self) -> None:
        self.metrics = NodeMetrics()
        self.health = HealthTracker()
        self.submitted: list[tuple[TaskSpec, float, float, str | None]] = []
        self.refuse_with: InvalidTransaction | None = None
        self.explode = False
        self.healthy = True

    def get_status(self) -> dict[str, Any]:
        if self.explode:
            raise RuntimeError("disk on fire")
        return {"node_id": "fake", "blockchain_height": 3, "stats": {"blocks_mined": 1}}

    def get_health_metrics(self) -> HealthMetrics:
        return HealthMetrics(1.0, 1.0, 5.0, 10.0, self.healthy)

    def get_economic_status(self) -> dict[str, Any]:
        return {"staked": True, "stake_amount": 10.0, "reputation": 0.5, "rewards_earned": 1.0}

    def block_summary(self, height: int) -> dict[str, Any] | None:
        return {"height": height} if height <= 3 else None

    def task_views(self) -> list[TaskView]:
        view = self.task_view(bytes.fromhex(TASK_ID))
        return [view] if view else []

    def task_view(self, task_id: bytes) -> TaskView | None:
        if task_id.hex() != TASK_ID:
            return None
        return TaskView(TASK_ID, "completed", "pw" + "0" * 40, 10.0, 5, "digits", 0.9, 2)

    def task_model(self, task_id: bytes) -> bytes | None:
        return b"safetensors bytes" if task_id.hex() == TASK_ID else None

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        if self.refuse_with is not None:
            raise self.refuse_with
        self.submitted.append((spec, reward, fee, request_id))
        return "cd" * 32

    def stake(self, amount: float, role: NodeRole | None = None) -> TicketView:
        if self.refuse_with is not None:
            raise self.refuse_with
        return TicketView("ef" * 32, (role or NodeRole.MINER).value, amount, "pw" + "1" * 40, False)
