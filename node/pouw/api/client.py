"""A client of a node's HTTP API. The operator's only import from pouw: it needs no torch."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 10.0


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ConnectionError(f"{method} {path}: {error}") from error
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/status")
        return result

    def health(self) -> dict[str, Any]:
        response = self._http.get("/health")  # 503 still carries the health fields
        result: dict[str, Any] = response.json()
        return result

    def economics(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/economics")
        return result

    def block(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/blocks/{height}")
        return result

    def tasks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/tasks")
        return result

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/tasks/{task_id}")
        return result

    def task_model(self, task_id: str) -> bytes:
        return self._call("GET", f"/tasks/{task_id}/model").content

    def submit_task(
        self,
        spec: dict[str, Any],
        reward: float,
        fee: float = 0.01,
        request_id: str | None = None,
    ) -> str:
        body = {**spec, "reward": reward, "fee": fee}
        if request_id is not None:
            body["request_id"] = request_id
        task_id: str = self._json("POST", "/tasks", json=body)["task_id"]
        return task_id

    def stake(self, amount: float, role: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"amount": amount}
        if role is not None:
            body["role"] = role
        result: dict[str, Any] = self._json("POST", "/stake", json=body)
        return result


def _error(response: httpx.Response) -> ApiError:
    try:
        detail: Any = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, dict):
        return ApiError(response.status_code, str(detail.get("reason", "")), str(detail))
    if isinstance(detail, list):  # pydantic's validation errors
        fields = "; ".join(
            f"{'.'.join(str(p) for p in entry.get('loc', [])[1:])}: {entry.get('msg', '')}"
            for entry in detail
        )
        return ApiError(response.status_code, "invalid", fields)
    return ApiError(response.status_code, "", str(detail))
