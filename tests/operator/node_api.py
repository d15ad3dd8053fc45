"""A node API for operator tests: the real FastAPI app (pouw.api.app) over a scripted node,
served by uvicorn on 127.0.0.1 in a thread of its own, so the operator's httpx calls cross a
real socket. The test drives the tasks' views and counts what the operator asked for."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from pouw.api.app import create_app
from pouw.api.server import serve_api
from pouw.errors import InvalidTransaction, Reason
from pouw.node.views import MinerProgress, TaskView, TicketView
from pouw.roles import NodeRole
from pouw.spec import TaskSpec
from tests.api.fake_node import CLIENT, FakeNode

TOKEN = "operator-test-token"


@dataclass
class Payment:
    spec: TaskSpec
    reward: float
    fee: float
    request_id: str | None


class ScriptedNode(FakeNode):
    """A node whose tasks the test moves from phase to phase. Payments and tickets are
    deduplicated by request id as the real node does; `posts` holds every POST /tasks that
    reached the node, `payments` the tasks paid for."""

    def __init__(self, balance: float = 100.0) -> None:
        super().__init__()
        self.balance = balance
        self.posts: list[Payment] = []
        self.views: dict[str, TaskView] = {}
        self.by_request: dict[str, str] = {}
        self.confirmed: set[str] = set()
        """Ticket ids that /economics lists (mined)."""
        self.unavailable = False
        """Every route that reaches the node answers 503, as a node in trouble would."""
        self.reads: Counter[str] = Counter()
        """GET /tasks/{id} answered, by task id."""
        self.lock = threading.Lock()

    ADDRESS = "pw" + "a1" * 20
    """The address the node's /status names (the faucet pays it)."""

    def get_status(self) -> dict[str, Any]:
        return {**super().get_status(), "address": self.ADDRESS}

    @property
    def payments(self) -> list[str]:
        return list(self.views)

    def _maybe_explode(self) -> None:
        if self.unavailable:
            raise RuntimeError("the node is down")

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        self._maybe_explode()
        with self.lock:
            self.posts.append(Payment(spec, reward, fee, request_id))
            if request_id is not None and request_id in self.by_request:
                return self.by_request[request_id]
            if self.refuse_with is not None:
                raise self.refuse_with
            if reward + fee > self.balance:
                raise InvalidTransaction(
                    Reason.OVERSPEND, f"spends {reward + fee}, balance is {self.balance}"
                )
            task_id = hashlib.sha256(f"{request_id}:{len(self.posts)}".encode()).hexdigest()
            self.balance -= reward + fee
            self.views[task_id] = TaskView(
                task_id, "pending", CLIENT, reward, spec.epochs, spec.dataset.name,
                spec.min_accuracy, None, message="payment not yet in a block",
            )  # fmt: skip
            if request_id is not None:
                self.by_request[request_id] = task_id
            return task_id

    def task_view(self, task_id: bytes) -> TaskView | None:
        self._maybe_explode()
        self.reads[task_id.hex()] += 1
        return self.views.get(task_id.hex())

    def task_views(self) -> list[TaskView]:
        return list(self.views.values())

    def advance(self, task_id: str, phase: str, **fields: Any) -> None:
        """Move a task on, as the network would (phase, progress, blocks, test_accuracy...)."""
        with self.lock:
            self.views[task_id] = replace(self.views[task_id], phase=phase, **fields)  # type: ignore[arg-type]

    def get_economic_status(self) -> dict[str, Any]:
        self._maybe_explode()
        tickets = [
            {"ticket_id": ticket.ticket_id, "role": ticket.role, "amount": ticket.amount}
            for ticket in self.tickets.values()
            if ticket.ticket_id in self.confirmed
        ]
        return {"balance": self.balance, "staked": bool(tickets), "tickets": tickets}

    def stake(
        self, amount: float, role: NodeRole | None = None, request_id: str | None = None
    ) -> TicketView:
        self._maybe_explode()
        with self.lock:
            if request_id is not None and request_id in self.tickets:
                return self.tickets[request_id]
            if amount > self.balance:
                raise InvalidTransaction(
                    Reason.OVERSPEND, f"spends {amount}, balance is {self.balance}"
                )
            self.balance -= amount
            ticket_id = hashlib.sha256(f"ticket:{request_id}:{len(self.staked)}".encode())
            self.staked.append((amount, role))
            ticket = TicketView(
                ticket_id.hexdigest(), (role or NodeRole.MINER).value, amount, CLIENT, False
            )
            if request_id is not None:
                self.tickets[request_id] = ticket
            return ticket


def progress(*epochs: tuple[int, float, float]) -> list[MinerProgress]:
    """Per-miner progress from (epoch, loss, accuracy) triples."""
    return [
        MinerProgress(f"pw{i}" + "0" * 39, epoch, epoch * 10, loss, accuracy, False)
        for i, (epoch, loss, accuracy) in enumerate(epochs)
    ]


@contextmanager
def served(node: ScriptedNode, token: str | None = TOKEN) -> Iterator[str]:
    """Serve the node's API with uvicorn in a thread; yields its base URL."""
    ready: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]] = Future()

    async def main() -> None:
        server = await serve_api(create_app(node, api_token=token), "127.0.0.1", 0)
        stop = asyncio.Event()
        ready.set_result((asyncio.get_running_loop(), stop, server.port))
        try:
            await stop.wait()
        finally:
            await server.stop()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # reported to the waiting test instead of lost
            if not ready.done():
                ready.set_exception(error)
            raise

    thread = threading.Thread(target=run, name="node-api", daemon=True)
    thread.start()
    loop, stop, port = ready.result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
