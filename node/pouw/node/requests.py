"""Request-id idempotency: a client that retries a payment or a stake with the same request id
gets the first answer back instead of paying again, also after the node restarts."""

from __future__ import annotations

import json
from pathlib import Path

REQUESTS_FILE = "requests.json"


class RequestLog:
    """Request ids and what they bought (a task id, a ticket id), kept in the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / REQUESTS_FILE

    def get(self, request_id: str) -> str | None:
        return self._load().get(request_id)

    def put(self, request_id: str, answer: str) -> None:
        requests = self._load()
        requests[request_id] = answer
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(requests))
        temporary.replace(self.path)

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        loaded: dict[str, str] = json.loads(self.path.read_text())
        return loaded
