"""MLTask <-> node API, pure: the spec as the body of POST /tasks, the node's task view as the
MLTask's status, and a failed API call as a condition's reason.

The spec mapping is `pouw.manifest`'s, the one `pouw task submit` uses too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pouw.api.client import UNREACHABLE, ApiError
from pouw.manifest import ManifestError, task_order
from pouw_operator.conditions import Condition, condition, set_condition
from pouw_operator.errors import OperatorError
from pouw_operator.resources import MLTaskSpec, MLTaskStatus, PaidStatus, TaskPhase

NODE_PHASES: Mapping[str, TaskPhase] = {
    "pending": "Submitted",  # paid, the payment waits in a mempool
    "training": "Training",
    "evaluating": "Evaluating",
    "completed": "Completed",
    "failed": "Failed",
    "refunded": "Failed",  # its deadline passed unsettled: the escrow went back to the client
}
FINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed"})

# Condition types of an MLTask.
SUBMITTED = "Submitted"
"""True once a node accepted the payment; False (with the node's reason) when it refused."""
SYNCED = "Synced"
"""True while the last poll of the task's node answered; False with why it did not."""
SUCCEEDED = "Succeeded"
"""Set once the task ends: True when completed, False when it failed."""

_RETRY_STATUSES = frozenset({401, 403, 408, 429})


class SpecError(OperatorError, ValueError):
    """An MLTask spec the operator cannot turn into a body (the CRD schema should prevent it)."""


@dataclass(frozen=True)
class Submission:
    """The arguments of NodeClient.submit_task for one MLTask."""

    spec: dict[str, Any]
    reward: float
    fee: float
    request_id: str


@dataclass(frozen=True)
class Failure:
    """Why a call to a node failed, as a condition shows it. `permanent`: the node refused and
    asking again cannot help (the MLTask or Stake is Failed); else retry later."""

    reason: str
    message: str
    permanent: bool


def request_id(uid: str) -> str:
    """The idempotency key of an MLTask's payment: a restarted operator never pays twice."""
    return f"mltask-{uid}"


def submission(spec: MLTaskSpec, uid: str) -> Submission:
    """The body of POST /tasks for an MLTask's spec (camelCase, as the CRD has it)."""
    try:
        order = task_order(spec)
    except ManifestError as error:
        raise SpecError(f"spec: {error}") from None
    return Submission(order.spec, order.reward, order.fee, request_id(uid))


def model_url(node_url: str, task_id: str) -> str:
    return f"{node_url.rstrip('/')}/tasks/{task_id}/model"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _best(progress: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The miner with the highest batch accuracy, then the lowest loss."""
    if not progress:
        return None

    def rank(entry: Mapping[str, Any]) -> tuple[float, float]:
        accuracy = _number(entry.get("accuracy"))
        loss = _number(entry.get("loss"))
        return (
            -1.0 if accuracy is None else accuracy,
            -float("inf") if loss is None else -loss,
        )

    return max(progress, key=rank)


def status_from_view(view: Mapping[str, Any], node_url: str) -> MLTaskStatus:
    """The MLTask status fields of a node's task view (GET /tasks/{id}, TaskOut); None removes
    a field (merge patch). Raises ValueError when the view has no phase the operator knows."""
    node_phase = view.get("phase")
    phase = NODE_PHASES.get(node_phase) if isinstance(node_phase, str) else None
    if phase is None:
        raise ValueError(f"the node reports an unknown task phase {node_phase!r}")
    raw_progress = view.get("progress")
    progress = [entry for entry in raw_progress or () if isinstance(entry, Mapping)]
    epochs = [int(entry["epoch"]) for entry in progress if _number(entry.get("epoch")) is not None]
    best = _best(progress)
    blocks = _number(view.get("blocks"))
    task_id = str(view.get("task_id", ""))
    completed = phase == "Completed"
    status = MLTaskStatus(
        phase=phase,
        epoch=max(epochs, default=0),
        loss=None if best is None else _number(best.get("loss")),
        accuracy=None if best is None else _number(best.get("accuracy")),
        testAccuracy=_number(view.get("test_accuracy")),
        blocks=0 if blocks is None else int(blocks),
        modelUrl=(
            model_url(node_url, task_id)
            if completed and task_id and view.get("model_available")
            else None
        ),
        message=_message(phase, view),
    )
    return status


def _message(phase: TaskPhase, view: Mapping[str, Any]) -> str:
    said = str(view.get("message") or "")
    if said:
        return said
    if phase == "Completed":
        accuracy = _number(view.get("test_accuracy"))
        held = "" if view.get("model_available") else "; this node does not hold the best model"
        scored = "" if accuracy is None else f": test accuracy {accuracy:.4f}"
        return f"completed{scored}{held}"
    return {
        "Submitted": "paid; the payment waits for a block",
        "Training": "the drawn miners are training it",
        "Evaluating": "the evaluator is scoring the final models",
        "Failed": "the task failed",
    }.get(phase, "")


def view_conditions(status: MLTaskStatus, node: str, generation: int) -> list[Condition]:
    """The conditions a successful poll sets: Synced, and Succeeded once the task ended."""
    phase = status.get("phase", "Submitted")
    found = [
        condition(SYNCED, True, "Polled", f"{phase.lower()} on {node}", generation),
    ]
    if phase == "Completed":
        accuracy = status.get("testAccuracy")
        scored = "" if accuracy is None else f" with test accuracy {accuracy:.4f}"
        found.append(condition(SUCCEEDED, True, "TaskCompleted", f"completed{scored}", generation))
    elif phase == "Failed":
        found.append(
            condition(SUCCEEDED, False, "TaskFailed", status.get("message", ""), generation)
        )
    return found


def camel_reason(reason: str) -> str:
    """A node's snake_case rule ("overspend", "invalid_task_spec") as a condition reason."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", reason))


def failure_of(error: ApiError) -> Failure:
    """Classify a failed node call: a refusal (4xx) is permanent, with the node's reason; no
    answer, a node error (5xx), a throttle or a token the node rejects may pass, so retry."""
    status = error.status
    if status == UNREACHABLE:
        return Failure("NodeUnreachable", error.message, permanent=False)
    if status >= 500:
        return Failure("NodeUnreachable", f"the node answered {status}: {error.message}", False)
    if status < 400:
        return Failure("MalformedAnswer", f"{error.reason}: {error.message}", permanent=False)
    if status in (401, 403):
        return Failure("Unauthorized", f"the node refused the API token: {error.message}", False)
    if status in _RETRY_STATUSES:
        return Failure("NodeBusy", f"the node answered {status}: {error.message}", False)
    if status == 422 and error.reason in ("", "invalid"):
        return Failure("InvalidSpec", error.message, permanent=True)
    reason = camel_reason(error.reason) if error.reason else "Refused"
    return Failure(reason, error.message or f"the node refused it ({status})", permanent=True)


# -- shared by the MLTask and Stake handlers ------------------------------------------------------

MAX_BACKOFF_S = 300.0


def backoff(retry: int, base: float, cap: float = MAX_BACKOFF_S) -> float:
    """The delay before attempt `retry + 1`: doubling from `base`, at most `cap`."""
    return float(min(cap, base * 2 ** min(retry, 16)))


def status_changes(
    status: PaidStatus,
    generation: int,
    fields: PaidStatus,
    conditions: Sequence[Condition] = (),
) -> PaidStatus:
    """The merge patch of a status that takes `fields` and `conditions`: only what differs
    (a None field removes it; the conditions list goes whole), empty when nothing changes, so
    a poll that learns nothing new writes nothing."""
    before: Mapping[str, object] = status
    changes = {key: value for key, value in fields.items() if before.get(key) != value}
    if conditions:
        merged = list(status.get("conditions") or ())
        for new in conditions:
            merged = set_condition(merged, new)
        if merged != list(status.get("conditions") or ()):
            changes["conditions"] = merged
    if status.get("observedGeneration") != generation:
        changes["observedGeneration"] = generation
    return cast(PaidStatus, changes)
