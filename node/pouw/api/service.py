"""What the HTTP API needs of a node. `pouw.node.PoUWNode` provides it; tests give fakes."""

from __future__ import annotations

from typing import Any, Protocol

from pouw.monitoring.health import HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.node.views import HealthMetrics, TaskView, TicketView
from pouw.roles import NodeRole
from pouw.spec import TaskSpec


class NodeService(Protocol):
    metrics: NodeMetrics
    health: HealthTracker

    def get_status(self) -> dict[str, Any]: ...

    def get_health_metrics(self) -> HealthMetrics: ...

    def get_economic_status(self) -> dict[str, Any]: ...

    def block_summary(self, height: int) -> dict[str, Any] | None:
        """The main chain's block at `height` as JSON-ready values, or None above the tip."""
        ...

    def task_views(self) -> list[TaskView]: ...

    def task_view(self, task_id: bytes) -> TaskView | None: ...

    def task_model(self, task_id: bytes) -> bytes | None:
        """The best model of a completed task as safetensors, or None if not available."""
        ...

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        """Pay for a task; returns its id (hex). A repeated `request_id` returns the first
        submission's id without paying again. Raises TaskSpecError or InvalidTransaction."""
        ...

    def account(self, address: str) -> dict[str, Any]:
        """An account as of the tip: address, balance and locked (coins), nonce, next_nonce
        (the nonce after its transactions pending here)."""
        ...

    def relay_transaction(self, encoded: bytes) -> str:
        """Admit and announce a transaction signed elsewhere; its txid (hex). Raises
        MalformedData or InvalidTransaction (a repeat: `duplicate` or `replay`)."""
        ...

    def stake(
        self, amount: float, role: NodeRole | None = None, request_id: str | None = None
    ) -> TicketView:
        """Buy a ticket (role defaults to the node's). A repeated `request_id` returns the
        first purchase's ticket (its `confirmed` as of now) without buying again. Raises
        InvalidTransaction."""
        ...
