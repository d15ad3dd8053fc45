"""The node's HTTP API (README, "HTTP API"): reads are open, writes need the bearer token, bad
input gets a 4xx with a message and nothing answers 500.

Handlers are `async def` on purpose: they run on the node's event loop thread, the only thread
that mutates the node, so a read never sees a half-applied block. The node's reads are
in-memory or a small SQLite lookup, short enough not to stall the loop.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pouw.api.schemas import (
    AccountOut,
    BlockOut,
    Created,
    HealthOut,
    Invalid,
    Problem,
    Refused,
    Relayed,
    StakeBody,
    TaskBody,
    TaskOut,
    TicketOut,
    TransactionBody,
)
from pouw.api.service import NodeService
from pouw.crypto import is_address
from pouw.errors import InvalidTransaction, MalformedData
from pouw.monitoring.health import HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.node.requests import RequestConflict
from pouw.spec import TaskSpecError, task_spec_from_mapping

log = logging.getLogger(__name__)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEIGHT = 2**63 - 1  # SQLite's integer range: larger would overflow, not miss
MAX_BODY_BYTES = 1 << 20  # a task spec is a few hundred bytes
REQUEST_ID_REUSED = "request_id_reused"
"""The 409's reason when a request id comes back on its route with another body."""

_bearer = HTTPBearer(auto_error=False)
_INVALID: dict[int | str, dict[str, Any]] = {422: {"model": Invalid}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, **_INVALID}
_WRITE: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not UTF-8 JSON"},
    401: {"model": Problem},
    409: {"model": Refused},
    **_INVALID,
}


def _task_id(task_id: str) -> bytes:
    try:
        raw = bytes.fromhex(task_id)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise HTTPException(422, f"task id {task_id[:80]!r} is not 64 hex characters")
    return raw


def create_app(node: NodeService, *, api_token: str | None) -> FastAPI:
    app = FastAPI(
        title="PoUW node",
        version="1",
        description="A Proof-of-Useful-Work node. Writes need `Authorization: Bearer <token>`.",
        responses={503: {"model": Problem, "description": "the node failed to answer"}},
    )
    # Probes and scrapes are not the node's work: they would dilute its latency window.
    app.add_middleware(
        Guard,
        metrics=node.metrics,
        health=node.health,
        unrecorded=frozenset({"/health", "/metrics"}),
    )
    _map_errors(app)

    async def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api_token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not given or not hmac.compare_digest(given.encode(), api_token.encode()):
            raise HTTPException(
                401,
                "writes need Authorization: Bearer <POUW_API_TOKEN>"
                + (": the token is wrong" if given else ""),
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return node.get_status()

    @app.get("/health", responses={503: {"model": HealthOut, "description": "not healthy"}})
    async def health_check(response: Response) -> HealthOut:
        """200 when healthy, 503 when not: usable as a readiness probe."""
        metrics = HealthOut.model_validate(node.get_health_metrics())
        response.status_code = 200 if metrics.healthy else 503
        return metrics

    @app.get("/economics")
    async def economics() -> dict[str, Any]:
        return node.get_economic_status()

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition of this node's registry."""
        return Response(node.metrics.exposition(), media_type=PROMETHEUS_TEXT)

    @app.get("/blocks/{height}", responses=_NOT_FOUND)
    async def block(height: Annotated[int, Path(ge=0, le=MAX_HEIGHT)]) -> BlockOut:
        summary = node.block_summary(height)
        if summary is None:
            raise HTTPException(404, f"no block at height {height}: above the chain's tip")
        return BlockOut.model_validate(summary)

    @app.get("/tasks")
    async def tasks() -> list[TaskOut]:
        return [TaskOut.model_validate(view) for view in node.task_views()]

    @app.get("/tasks/{task_id}", responses=_NOT_FOUND)
    async def task(task_id: str) -> TaskOut:
        view = node.task_view(_task_id(task_id))
        if view is None:
            raise HTTPException(404, f"no task {task_id} on this node's chain")
        return TaskOut.model_validate(view)

    @app.get(
        "/tasks/{task_id}/model",
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "safetensors"},
            **_NOT_FOUND,
        },
    )
    async def task_model(task_id: str) -> Response:
        """The best model of a completed task, as safetensors."""
        raw = _task_id(task_id)
        view = node.task_view(raw)
        if view is None:
            raise HTTPException(404, f"no task {task_id} on this node's chain")
        model = node.task_model(raw)
        if model is None:
            why = (
                "this node does not hold its best model"
                if view.phase == "completed"
                else "a model is kept once the task completes"
            )
            raise HTTPException(404, f"task {task_id} is {view.phase}: {why}")
        return Response(
            model,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{view.task_id}.safetensors"'},
        )

    @app.post("/tasks", status_code=201, dependencies=[Depends(authorised)], responses=_WRITE)
    async def submit(body: TaskBody) -> Created:
        """Pay for a task; a repeated `request_id` returns the first submission's id; the same
        `request_id` with another body is 409 `request_id_reused`."""
        spec = task_spec_from_mapping(body.spec_mapping())
        task_id = await node.submit_task_spec(spec, body.reward, body.fee, body.request_id)
        return Created(task_id=task_id)

    @app.post("/stake", status_code=201, dependencies=[Depends(authorised)], responses=_WRITE)
    async def stake(body: StakeBody) -> TicketOut:
        """Buy a ticket for the node's key (role defaults to the node's); a repeated
        `request_id` returns the first purchase's ticket without buying again; the same
        `request_id` with another body is 409 `request_id_reused`. Ids are apart from /tasks'."""
        return TicketOut.model_validate(node.stake(body.amount, body.role, body.request_id))

    @app.get("/accounts/{address}", responses=_INVALID)
    async def account(address: str) -> AccountOut:
        if not is_address(address):
            raise HTTPException(422, f"{address[:80]!r} is not an address (pw + 40 hex)")
        return AccountOut.model_validate(node.account(address))

    @app.post(
        "/transactions", status_code=201, dependencies=[Depends(authorised)], responses=_WRITE
    )
    async def relay(body: TransactionBody) -> Relayed:
        """Admit and announce a transaction signed elsewhere (a faucet's transfer); 409 with
        the ledger's reason when refused (`duplicate` or `replay`: it is in already)."""
        return Relayed(txid=node.relay_transaction(bytes.fromhex(body.transaction)))

    return app


def _map_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return JSONResponse({"detail": [_readable(entry) for entry in error.errors()]}, 422)

    @app.exception_handler(TaskSpecError)
    async def bad_spec(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 422)

    @app.exception_handler(MalformedData)
    async def malformed(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 422)

    @app.exception_handler(RequestConflict)
    async def reused(request: Request, error: Exception) -> JSONResponse:
        refusal = Refused(reason=REQUEST_ID_REUSED, detail=str(error))
        return JSONResponse(refusal.model_dump(), 409)

    @app.exception_handler(InvalidTransaction)
    async def refused(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, InvalidTransaction)
        refusal = Refused(reason=error.reason, detail=error.detail or str(error))
        return JSONResponse(refusal.model_dump(), 409)


def _readable(error: Any) -> dict[str, Any]:
    """A validation error as JSON that cannot fail: FastAPI's default handler echoes the input,
    and an input of NaN, Infinity or non-UTF-8 bytes made it raise (so a 503). We echo only a
    short scalar input, and the message, which names the field through `loc`."""
    entry: dict[str, Any] = {
        "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }
    given = error.get("input")
    if isinstance(given, float) and not math.isfinite(given):
        entry["input"] = str(given)
    elif isinstance(given, bool | int | float | None) or (
        isinstance(given, str) and len(given) <= 200
    ):
        entry["input"] = given
    return entry


class Guard:
    """The outermost layer the node controls: counts every response by status class, times
    the node's work for its health, refuses oversized bodies before they are buffered, and turns
    an unexpected exception into a logged 503, so a bug costs one request, never a 500."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: NodeMetrics,
        health: HealthTracker | None,
        unrecorded: frozenset[str] = frozenset(),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.health = health
        self.unrecorded = unrecorded
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:  # FastAPI passes an HTTPException through as is
                raise HTTPException(413, f"request body over {self.max_body} bytes")
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if _declared_length(scope) > self.max_body:
                await _problem(tracked_send, 413, f"request body over {self.max_body} bytes")
            else:
                await self.app(scope, limited_receive, tracked_send)
        except Exception as error:
            log.exception("API %s %s failed", scope.get("method"), scope.get("path"))
            if status:  # the response has begun: too late to change it
                status = 503
            else:
                await _problem(tracked_send, 503, f"node error: {type(error).__name__}")
        finally:
            if status:
                self.metrics.api_requests.labels(f"{status // 100}xx").inc()
                if self.health is not None and scope.get("path") not in self.unrecorded:
                    self.health.record(time.perf_counter() - started, status < 500)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
