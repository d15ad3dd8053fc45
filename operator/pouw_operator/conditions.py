"""status.conditions in the metav1.Condition shape, with observedGeneration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, TypedDict

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(TypedDict):
    type: str
    status: ConditionStatus
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


def now() -> str:
    """RFC 3339 in UTC, seconds precision: what Kubernetes writes."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, status: bool | ConditionStatus, reason: str, message: str, generation: int
) -> Condition:
    """A condition; `reason` is CamelCase (a machine-readable word), `message` for people."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=now(),
        observedGeneration=generation,
    )


def set_condition(existing: Sequence[object] | None, new: Condition) -> list[Condition]:
    """The conditions with `new` replacing the one of its type. The transition time is kept
    when the status did not change, as Kubernetes expects."""
    kept: list[Condition] = []
    for item in existing or ():
        if not isinstance(item, dict) or "type" not in item:
            continue
        if item["type"] == new["type"]:
            if item.get("status") == new["status"] and item.get("lastTransitionTime"):
                new = Condition(**{**new, "lastTransitionTime": item["lastTransitionTime"]})
            continue
        kept.append(item)  # type: ignore[arg-type]
    return [*kept, new]


def find_condition(existing: Sequence[object] | None, type_: str) -> Condition | None:
    for item in existing or ():
        if isinstance(item, dict) and item.get("type") == type_:
            return item  # type: ignore[return-value]
    return None
