"""A client of a node's HTTP API.

The Kubernetes operator's only import from pouw, so it imports nothing but the stdlib and
httpx: no torch, no other pouw module (a test checks). Every failure is an ApiError, so a
caller catches one thing and tells a refusal (4xx) from an outage (status 0 or 5xx).
"""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 10.0
UNREACHABLE = 0  # ApiError.status when no HTTP answer came back


class ApiError(Exception):
    """`reason` is the ledger's rule for a 409 (e.g. "overspend"), "invalid" for a 422 from
    validation, "unreachable" for no answer, else ""; `message` is the server's own words."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed: no answer, or the node failed."""
        return self.status == UNREACHABLE or self.status >= 500


class NodeClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        return _mapping(self._call("GET", "/status"))

    def health(self) -> dict[str, Any]:
        """The health fields, also when the node answers 503 because it is not healthy."""
        return _mapping(self._call("GET", "/health", also_ok=(503,)))

    def metrics(self) -> str:
        """The Prometheus exposition of /metrics."""
        return self._call("GET", "/metrics").text

    def economics(self) -> dict[str, Any]:
        return _mapping(self._call("GET", "/economics"))

    def block(self, height: int) -> dict[str, Any]:
        return _mapping(self._call("GET", f"/blocks/{height}"))

    def tasks(self) -> list[dict[str, Any]]:
        response = self._call("GET", "/tasks")
        views = _json(response)
        if not isinstance(views, list):
            raise ApiError(response.status_code, "malformed", "expected a JSON list")
        return views

    def task(self, task_id: str) -> dict[str, Any]:
        return _mapping(self._call("GET", f"/tasks/{task_id}"))

    def task_model(self, task_id: str) -> bytes:
        """The task's best model as safetensors bytes."""
        return self._call("GET", f"/tasks/{task_id}/model").content

    def submit_task(
        self,
        spec_mapping: dict[str, Any],
        reward: float,
        fee: float | None = None,
        request_id: str | None = None,
    ) -> str:
        """Pay for the task; returns its id (hex). Without a `fee` the node's default is paid.
        Pass a `request_id` to retry safely."""
        body: dict[str, Any] = {**spec_mapping, "reward": reward}
        if fee is not None:
            body["fee"] = fee
        if request_id is not None:
            body["request_id"] = request_id
        response = self._call("POST", "/tasks", json=body)
        task_id = _mapping(response).get("task_id")
        if not isinstance(task_id, str):
            raise ApiError(response.status_code, "malformed", "no task_id in the answer")
        return task_id

    def stake(
        self, amount: float, role: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Buy a ticket; returns it (ticket_id, role, amount, owner, confirmed). Pass a
        `request_id` to retry safely: a repeat returns the first purchase's ticket."""
        body: dict[str, Any] = {"amount": amount}
        if role is not None:
            body["role"] = role
        if request_id is not None:
            body["request_id"] = request_id
        return _mapping(self._call("POST", "/stake", json=body))

    def account(self, address: str) -> dict[str, Any]:
        """address, balance and locked (coins), nonce, next_nonce (after pending ones)."""
        return _mapping(self._call("GET", f"/accounts/{address}"))

    def relay_transaction(self, encoded: bytes) -> str:
        """Hand a transaction signed elsewhere to the node; its txid (hex)."""
        body = {"transaction": encoded.hex()}
        txid = _mapping(self._call("POST", "/transactions", json=body)).get("txid")
        if not isinstance(txid, str):
            raise ApiError(500, "malformed", "no txid in the answer")
        return txid

    def _call(
        self, method: str, path: str, *, also_ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(
                UNREACHABLE, "unreachable", f"{method} {self.base_url}{path}: {error!r}"
            ) from error
        if response.status_code >= 400 and response.status_code not in also_ok:
            raise _error(response)
        return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, "malformed", "the answer is not JSON") from None


def _mapping(response: httpx.Response) -> dict[str, Any]:
    value = _json(response)
    if not isinstance(value, dict):
        raise ApiError(response.status_code, "malformed", "expected a JSON object")
    return value


def _error(response: httpx.Response) -> ApiError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        return ApiError(status, "", response.text[:500] or response.reason_phrase)
    if not isinstance(body, dict):
        return ApiError(status, "", str(body)[:500])
    detail = body.get("detail", "")
    if "reason" in body:  # a refused transaction: {"reason", "detail"}
        return ApiError(status, str(body["reason"]), str(detail))
    if isinstance(detail, list):  # FastAPI's validation errors name the field in `loc`
        fields = "; ".join(
            f"{'.'.join(str(part) for part in entry.get('loc', [])[1:])}: {entry.get('msg', '')}"
            for entry in detail
            if isinstance(entry, dict)
        )
        return ApiError(status, "invalid", fields)
    return ApiError(status, "", str(detail))
