"""The node's HTTP API (DESIGN.md section 3): reads are open, writes need the bearer token,
bad input gets a 4xx with a message and nothing answers 500."""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pouw.api.schemas import Created, StakeBody, TaskBody
from pouw.api.service import NodeService
from pouw.blockchain.errors import InvalidTransaction
from pouw.blockchain.task_spec import TaskSpecError, task_spec_from_mapping

log = logging.getLogger(__name__)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
bearer = HTTPBearer(auto_error=False)


def _task_id(task_id: str) -> bytes:
    try:
        raw = bytes.fromhex(task_id)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise HTTPException(422, f"task id {task_id!r} is not 64 hex characters")
    return raw


def create_app(node: NodeService, *, api_token: str | None) -> FastAPI:
    app = FastAPI(title="PoUW node", version="1", description="A Proof-of-Useful-Work node.")

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if api_token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), api_token.encode()):
            raise HTTPException(401, "writes need Authorization: Bearer <POUW_API_TOKEN>")

    _contain_errors(app, node)

    @app.get("/status")
    def status() -> dict[str, Any]:
        return node.get_status()

    @app.get("/health")
    def health() -> JSONResponse:
        metrics = node.get_health_metrics()
        return JSONResponse(dataclasses.asdict(metrics), 200 if metrics.healthy else 503)

    @app.get("/economics")
    def economics() -> dict[str, Any]:
        return node.get_economic_status()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(node.metrics.exposition(), media_type=PROMETHEUS_TEXT)

    @app.get("/blocks/{height}")
    def block(height: int) -> dict[str, Any]:
        summary = node.block_summary(height) if height >= 0 else None
        if summary is None:
            raise HTTPException(404, f"no block at height {height}")
        return summary

    @app.get("/tasks")
    def tasks() -> list[dict[str, Any]]:
        return [dataclasses.asdict(view) for view in node.task_views()]

    @app.get("/tasks/{task_id}")
    def task(task_id: str) -> dict[str, Any]:
        view = node.task_view(_task_id(task_id))
        if view is None:
            raise HTTPException(404, f"no task {task_id}")
        return dataclasses.asdict(view)

    @app.get("/tasks/{task_id}/model")
    def task_model(task_id: str) -> Response:
        raw = _task_id(task_id)
        if node.task_view(raw) is None:
            raise HTTPException(404, f"no task {task_id}")
        model = node.task_model(raw)
        if model is None:
            raise HTTPException(404, f"task {task_id} has no result model on this node yet")
        return Response(model, media_type="application/octet-stream")

    @app.post("/tasks", status_code=201, dependencies=[Depends(authorised)])
    async def submit(body: TaskBody) -> Created:
        try:
            spec = task_spec_from_mapping(body.spec_mapping())
            task_id = await node.submit_task_spec(spec, body.reward, body.fee, body.request_id)
        except TaskSpecError as error:
            raise HTTPException(422, str(error)) from None
        except InvalidTransaction as error:
            raise HTTPException(409, {"reason": error.reason, "detail": str(error)}) from None
        return Created(task_id=task_id)

    @app.post("/stake", status_code=201, dependencies=[Depends(authorised)])
    def stake(body: StakeBody) -> dict[str, Any]:
        try:
            ticket = node.stake(body.amount, body.role)
        except InvalidTransaction as error:
            raise HTTPException(409, {"reason": error.reason, "detail": str(error)}) from None
        return dataclasses.asdict(ticket)

    return app


def _contain_errors(app: FastAPI, node: NodeService) -> None:
    @app.middleware("http")
    async def count_and_contain(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as error:  # the last line of defence: log it, answer 503, keep serving
            log.exception("API %s %s failed", request.method, request.url.path)
            response = JSONResponse({"detail": f"node error: {type(error).__name__}"}, 503)
        node.metrics.api_requests.labels(f"{response.status_code // 100}xx").inc()
        node_health = getattr(node, "health", None)
        if node_health is not None:
            node_health.record(time.perf_counter() - started, response.status_code < 500)
        return response
