"""schemathesis against the node's OpenAPI document: every operation, positive and negative
inputs, with the bearer token. Checks: no 5xx (a 503 only where the schema declares it, and
never from a bug), and every response conforms to the schema (status code, content type,
body).

Two backends: a real PoUWNode (its own event loop in a thread, the API served by uvicorn on a
free port, as `pouw node` runs it), and the FakeNode of tests/api, which also has a completed
task with a model, a training one with progress, and refusals to give.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pouw.api.app import create_app
from pouw.spec import BUILTIN_DATASETS
from tests.api.fake_node import DONE_ID, TOKEN, TRAINING_ID, FakeNode
from tests.fuzz import fuzz_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
FAKE_EXAMPLES = 30
REAL_EXAMPLES = 10
"""Random cases per operation (ten of them) on each backend, on top of schemathesis' own
examples and coverage phases (boundary values, missing and wrong-typed fields, other methods):
about 1,000 requests in all, 450 of them to the real node (20 times more when deep)."""


def _no_server_error(response: Any, case: schemathesis.Case) -> None:
    """5xx: only /health's declared 503 (unhealthy), which is not a failure to answer."""
    if response.status_code >= 500:
        declared = case.path == "/health" and response.status_code == 503
        assert declared, f"{case.method} {case.path} answered {response.status_code}"


# -- the fake node, in process -----------------------------------------------------------------


fake_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(FakeNode(), api_token=TOKEN)
)


def _steer(case: schemathesis.Case, task_ids: list[str]) -> None:
    """Bring some generated inputs within reach of the node: a free-form string rarely is a
    built-in dataset's name or a known task's id. A third of the cases, chosen by a hash of
    the case (so a derandomized run stays reproducible), get one; the rest go as generated."""
    if zlib.crc32(repr((case.path_parameters, case.body)).encode()) % 3:
        return
    parameters = case.path_parameters
    if parameters and "task_id" in parameters and task_ids:
        choice = zlib.crc32(repr(parameters).encode()) % len(task_ids)
        parameters["task_id"] = task_ids[choice]
    body = case.body
    if case.path == "/tasks" and isinstance(body, dict) and isinstance(body.get("dataset"), dict):
        dataset = body["dataset"]
        dataset["name"] = BUILTIN_DATASETS[zlib.crc32(repr(body).encode()) % 4]
        if dataset.get("format") in ("npz", "csv") and not dataset.get("sha256"):
            dataset["format"] = "builtin"


@fake_schema.parametrize()
@fuzz_settings(FAKE_EXAMPLES, suppress_health_check=list(HealthCheck))
def test_the_api_on_a_fake_node_keeps_its_schema(case: schemathesis.Case) -> None:
    _steer(case, [DONE_ID, TRAINING_ID, DONE_ID.upper(), "ff" * 32])
    response = case.call(headers=AUTH)
    _no_server_error(response, case)
    case.validate_response(response, checks=CHECKS)


# -- a real node, served as `pouw node` serves it ---------------------------------------------


class RealNode:
    """A PoUWNode and its API on their own event loop thread; stopped at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.node: Any = None
        self.server: Any = None

    def run(self, coroutine: Any, timeout: float = 120) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def start(self) -> str:
        from pouw.api.server import serve_api
        from pouw.node import NodeConfig, PoUWNode
        from pouw.roles import NodeRole

        self.thread.start()
        config = NodeConfig(
            node_id="node", role=NodeRole.PEER, port=0, data_dir=self.data_dir, api_token=TOKEN
        )

        async def up() -> int:
            self.node = PoUWNode("node", NodeRole.PEER, config=config)
            await self.node.start()
            self.server = await serve_api(create_app(self.node, api_token=TOKEN), "127.0.0.1", 0)
            return int(self.server.port)

        return f"http://127.0.0.1:{self.run(up())}"

    def stop(self) -> None:
        async def down() -> None:
            if self.server is not None:
                await self.server.stop()
            if self.node is not None:
                await self.node.stop()

        try:
            self.run(down(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = RealNode(tmp_path_factory.mktemp("api-node"))
    base_url = node.start()
    try:
        yield base_url
    finally:
        node.stop()


real_schema = schemathesis.openapi.from_dict(create_app(FakeNode(), api_token=TOKEN).openapi())
"""The same document: it is made from the routes, whichever node is behind them."""


@real_schema.parametrize()
@fuzz_settings(REAL_EXAMPLES, suppress_health_check=list(HealthCheck))
def test_the_api_on_a_real_node_keeps_its_schema(case: schemathesis.Case, real_node: str) -> None:
    known = ["ff" * 32]
    if "task_id" in (case.path_parameters or {}):  # the tasks this node has been paid for
        known += [view["task_id"] for view in httpx.get(f"{real_node}/tasks", timeout=30).json()]
    _steer(case, known)
    response = case.call(base_url=real_node, headers=AUTH)
    _no_server_error(response, case)
    case.validate_response(response, checks=CHECKS)
