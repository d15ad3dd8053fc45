"""Request-id idempotency: a client that retries a payment or a stake with the same request id
gets the first answer back instead of paying again, also after the node restarts.

Ids are scoped by route (`/tasks` and `/stake` each have their own), and each is kept with a
fingerprint of the request it answered: the same id with another body is a conflict, not a
silent replay of the first answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pouw.crypto import canonical_bytes, sha256
from pouw.errors import PouwError

REQUESTS_FILE = "requests.json"
Route = Literal["tasks", "stake"]
LEGACY_STAKE_PREFIX = "stake:"
"""Before routes, stake ids were kept as "stake:<id>" beside task ids in one space."""


class RequestConflict(PouwError):
    """A request id reused on its route with another body (the API's 409)."""

    def __init__(self, route: Route, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used on /{route} with another body: "
            "retry with the first body, or use a new request_id"
        )
        self.route = route
        self.request_id = request_id


def fingerprint(*request: object) -> str:
    """What identifies a request's body (its parsed values, canonically encoded)."""
    return sha256(canonical_bytes(request)).hex()


class RequestLog:
    """Request ids by route, each with its body's fingerprint and what it bought (a task id,
    a ticket id), kept in the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / REQUESTS_FILE

    def answer(self, route: Route, request_id: str, body: str) -> str | None:
        """The first answer to `request_id` on `route`, None when it is new; RequestConflict
        when it came with another body."""
        kept = self._load().get(route, {}).get(request_id)
        if kept is None:
            return None
        if kept["body"] and kept["body"] != body:
            raise RequestConflict(route, request_id)
        return kept["answer"]

    def put(self, route: Route, request_id: str, body: str, answer: str) -> None:
        requests = self._load()
        requests.setdefault(route, {})[request_id] = {"body": body, "answer": answer}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(requests))
        temporary.replace(self.path)

    def _load(self) -> dict[str, dict[str, dict[str, str]]]:
        if not self.path.exists():
            return {}
        loaded = json.loads(self.path.read_text())
        if loaded and all(isinstance(value, str) for value in loaded.values()):
            return _from_legacy(loaded)
        routed: dict[str, dict[str, dict[str, str]]] = loaded
        return routed


def _from_legacy(flat: dict[str, str]) -> dict[str, dict[str, dict[str, str]]]:
    """A file written before routes: its answers kept, their bodies unknown (any body gets the
    first answer back, as it did)."""
    routed: dict[str, dict[str, dict[str, str]]] = {"tasks": {}, "stake": {}}
    for key, answer in flat.items():
        if key.startswith(LEGACY_STAKE_PREFIX):
            routed["stake"][key.removeprefix(LEGACY_STAKE_PREFIX)] = {"body": "", "answer": answer}
        else:
            routed["tasks"][key] = {"body": "", "answer": answer}
    return routed
