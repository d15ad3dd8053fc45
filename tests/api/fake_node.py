"""A NodeService without a chain: enough state to drive every route, and a bridge that lets the
sync NodeClient talk to an app in process."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pouw.api.client import NodeClient
from pouw.blockchain.transactions import Transaction, decode_transaction
from pouw.errors import InvalidTransaction
from pouw.monitoring.health import HealthMetrics, HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.node.requests import RequestConflict
from pouw.node.views import MinerProgress, TaskView, TicketView
from pouw.roles import NodeRole
from pouw.spec import TaskSpec

TOKEN = "s3cret"
DONE_ID = "ab" * 32  # completed, model available
TRAINING_ID = "12" * 32  # training, no model yet
NEW_ID = "cd" * 32  # what submit_task_spec answers
CLIENT = "pw" + "0" * 40


class FakeProcess:
    """What HealthTracker reads of psutil.Process."""

    def __init__(self, cpu: float = 12.5, memory: float = 40.0) -> None:
        self.cpu = cpu
        self.memory = memory
        self.cpu_calls = 0

    def cpu_percent(self, interval: float | None = None) -> float:
        self.cpu_calls += 1
        return self.cpu

    def memory_percent(self) -> float:
        return self.memory


class FakeNode:
    def __init__(self) -> None:
        self.metrics = NodeMetrics()
        self.metrics.chain_height.set(3)
        self.health = HealthTracker(FakeProcess())  # type: ignore[arg-type]
        self.submitted: list[tuple[TaskSpec, float, float, str | None]] = []
        self.staked: list[tuple[float, NodeRole | None]] = []
        self.tickets: dict[str, TicketView] = {}  # by request id
        self.refuse_with: InvalidTransaction | RequestConflict | None = None
        self.relayed: list[Transaction] = []
        self.explode = False
        self.healthy = True
        self.loss = 0.25

    def _maybe_explode(self) -> None:
        if self.explode:
            raise RuntimeError("disk on fire")

    def get_status(self) -> dict[str, Any]:
        self._maybe_explode()
        return {"node_id": "fake", "blockchain_height": 3, "stats": {"blocks_mined": 1}}

    def get_health_metrics(self) -> HealthMetrics:
        return HealthMetrics(1.0, 1.0 if self.healthy else 0.2, 5.0, 10.0, self.healthy)

    def get_economic_status(self) -> dict[str, Any]:
        return {"staked": True, "stake_amount": 10.0, "reputation": 0.5, "rewards_earned": 1.0}

    def block_summary(self, height: int) -> dict[str, Any] | None:
        if height > 3:
            return None
        return {
            "height": height, "hash": "00" * 32, "prev_hash": "11" * 32, "timestamp_ms": 1000,
            "difficulty": 1, "nonce": height, "miner": "pw1", "task_id": DONE_ID,
            "transactions": [{"txid": "22" * 32, "kind": "reward", "fee": 0.0}],
            "checkpoint_bytes": 0,
            "attestations": [{"verifier": "pw3", "valid": True, "reason": ""}],
            "verified": True,
        }  # fmt: skip

    def task_views(self) -> list[TaskView]:
        return [
            view for raw in (DONE_ID, TRAINING_ID) if (view := self.task_view(bytes.fromhex(raw)))
        ]

    def task_view(self, task_id: bytes) -> TaskView | None:
        if task_id.hex() == DONE_ID:
            return TaskView(
                DONE_ID, "completed", CLIENT, 10.0, 5, "digits", 0.9, 2,
                miners=["pw1", "pw2"], blocks=7, test_accuracy=0.93,
                best_model_hash="ee" * 32, model_available=True,
            )  # fmt: skip
        if task_id.hex() == TRAINING_ID:
            progress = [
                MinerProgress("pw" + "1" * 40, 2, 40, self.loss, 0.8, False),
                MinerProgress("pw" + "2" * 40, 3, 55, 0.2, 0.85, True),
            ]
            return TaskView(
                TRAINING_ID, "training", CLIENT, 4.0, 5, "iris", 0.0, 5,
                miners=[p.miner for p in progress], progress=progress, blocks=3,
                message="2 miners training",
            )  # fmt: skip
        return None

    def task_model(self, task_id: bytes) -> bytes | None:
        return b"safetensors bytes" if task_id.hex() == DONE_ID else None

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        self._maybe_explode()
        if self.refuse_with is not None:
            raise self.refuse_with
        self.submitted.append((spec, reward, fee, request_id))
        return NEW_ID

    def account(self, address: str) -> dict[str, Any]:
        nonce = 2
        pending = len(self.relayed)
        return {"address": address, "balance": 7.5, "locked": 1.0, "nonce": nonce,
                "next_nonce": nonce + pending}  # fmt: skip

    def relay_transaction(self, encoded: bytes) -> str:
        self._maybe_explode()
        tx = decode_transaction(encoded)
        if self.refuse_with is not None:
            raise self.refuse_with
        self.relayed.append(tx)
        return tx.txid().hex()

    def stake(
        self, amount: float, role: NodeRole | None = None, request_id: str | None = None
    ) -> TicketView:
        self._maybe_explode()
        if request_id is not None and request_id in self.tickets:
            return self.tickets[request_id]
        if self.refuse_with is not None:
            raise self.refuse_with
        self.staked.append((amount, role))
        ticket = TicketView("ef" * 32, (role or NodeRole.MINER).value, amount, CLIENT, False)
        if request_id is not None:
            self.tickets[request_id] = ticket
        return ticket


class Bridge(httpx.BaseTransport):
    """httpx's ASGITransport is async only; NodeClient is sync, TestClient bridges the two."""

    def __init__(self, app: FastAPI) -> None:
        self.app = TestClient(app, raise_server_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.app.request(
            request.method,
            request.url.raw_path.decode(),
            content=request.read(),
            headers=request.headers,
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


def client_for(app: FastAPI, token: str | None = TOKEN) -> NodeClient:
    return NodeClient("http://node", token, transport=Bridge(app))
