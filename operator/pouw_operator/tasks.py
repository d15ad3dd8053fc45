"""kopf handlers for MLTask: pay for the task once through a node's API, then mirror the
network's view of it into status until it completes or fails.

- create / resume: unless status holds a task id (or a refusal), choose a node (NodeDirectory),
  pin it in status, pay through its API, write taskId, submittedTo and phase Submitted. A node
  that refuses (unknown dataset, fee above the balance) fails the MLTask with its reason; no
  node, or no answer, is a condition and a kopf.TemporaryError with a growing delay.
- a poller (every settings.poll_interval_s) asks the pinned pod for each MLTask in flight
  (GET /tasks/{id}) and writes what changed. It is one task for the whole operator, over the
  kopf index `mltask_index`, and not a kopf timer: kopf puts a finalizer on every object a
  timer serves, and an MLTask needs none.

Paying once. The node deduplicates payments by request id and the operator always sends
`mltask-<uid>`; but that memory is one node's, so before paying the operator writes the pod it
pays through (status.submittedTo, at once, not at the handler's end), and an operator
restarted before it wrote the task id asks that same pod again: an MLTask pays at most once.

Deleting an MLTask drops it from the index, so it is polled no more; nothing is undone on
chain: the payment is final, the network trains the task to its end and pays its workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw_operator import kube, payments, runtime
from pouw_operator.conditions import condition, set_condition
from pouw_operator.directory import NodeEndpoint
from pouw_operator.kube import MLTASK
from pouw_operator.task_status import (
    FINAL_PHASES,
    SUBMITTED,
    SYNCED,
    SpecError,
    Submission,
    failure_of,
    status_changes,
    status_from_view,
    submission,
    view_conditions,
)

RESOURCE = payments.resource(MLTASK)
KIND = MLTASK.kind


# -- paying ---------------------------------------------------------------------------------


def _pay(client: NodeClient, body: Submission) -> str:
    with client:
        return client.submit_task(body.spec, body.reward, body.fee, body.request_id)


async def submit_task(payment: payments.Payment, spec: Mapping[str, Any]) -> payments.Outcome:
    """Pay for the task through a node: pin one in status (or take the one pinned), then pay."""
    namespace, status, generation = payment.namespace, payment.status, payment.generation
    try:
        body = submission(spec, payment.uid)
    except SpecError as error:
        raise payments.Refused("InvalidSpec", str(error)) from None
    nodes = payments.directory()
    selector = (spec.get("networkSelector") or {}).get("matchLabels") or {}
    pinned = status.get("submittedTo")
    if pinned:
        endpoint = nodes.for_pod(namespace, str(pinned))
    else:
        endpoint = await asyncio.to_thread(nodes.for_task, namespace, selector)
        pinning = _submitting(status, endpoint, generation)
        marked = await kube.patch(MLTASK, namespace, payment.name, pinning, "status")
        payment.status = marked.get("status") or {}
    client = await asyncio.to_thread(nodes.client, namespace, endpoint)
    task_id = await asyncio.to_thread(_pay, client, body)
    message = f"paid through {endpoint.pod}: task {task_id}"
    fields = {
        "phase": "Submitted",
        "taskId": task_id,
        "submittedTo": endpoint.pod,
        "message": message,
    }
    return fields, [condition(SUBMITTED, True, "Accepted", message, generation)]


def _submitting(
    status: Mapping[str, Any], endpoint: NodeEndpoint, generation: int
) -> dict[str, Any]:
    """The status patch that pins the pod before paying."""
    message = f"paying through {endpoint.pod}"
    conditions = set_condition(
        status.get("conditions"),
        condition(SUBMITTED, "Unknown", "Submitting", message, generation),
    )
    return {
        "status": {
            "phase": "Pending",
            "submittedTo": endpoint.pod,
            "message": message,
            "conditions": conditions,
            "observedGeneration": generation,
        }
    }


@kopf.on.event(*RESOURCE)
def forget_task(event: Mapping[str, Any], uid: str, **_: Any) -> None:
    """A deleted MLTask leaves the phase gauge; there is nothing to undo on chain."""
    if event.get("type") == "DELETED":
        runtime.metrics().forget(KIND, uid)


# -- following ------------------------------------------------------------------------------


def _in_flight(status: Mapping[str, Any]) -> bool:
    """Paid for and not finished: what the poller follows."""
    return bool(status.get("taskId")) and status.get("phase") not in FINAL_PHASES


def _task_view(url: str, task_id: str) -> dict[str, Any]:
    with NodeClient(url) as client:  # reads need no token
        return client.task(task_id)


async def poll_task(item: payments.Tracked) -> None:
    """Mirror the pinned pod's view of the task (GET /tasks/{id}) into status."""
    status, generation = item.status, item.generation
    pod = str(status.get("submittedTo", ""))
    url = payments.directory().for_pod(item.namespace, pod).url
    try:
        view = await asyncio.to_thread(_task_view, url, str(status["taskId"]))
        mirrored = status_from_view(view, url)
    except (ApiError, ValueError) as error:
        if isinstance(error, ApiError):
            failure = failure_of(error)
            reason = "TaskNotFound" if error.status == 404 else failure.reason
            message = failure.message
        else:
            reason, message = "MalformedAnswer", str(error)
        # The phase stays what the node last said; Synced tells why it is not fresher.
        out_of_sync = condition(SYNCED, False, reason, message, generation)
        await payments.write(MLTASK, item, status_changes(status, generation, {}, [out_of_sync]))
        raise kopf.TemporaryError(f"{reason}: {message}") from None
    conditions = view_conditions(mirrored, pod, generation)
    await payments.write(MLTASK, item, status_changes(status, generation, mirrored, conditions))
    runtime.metrics().set_phase(KIND, item.uid, mirrored.get("phase", "Submitted"))


payments.pay_once(MLTASK, SUBMITTED, "taskId", "Submitted", submit_task)
payments.follow(MLTASK, "mltask_index", "mltask_status_poller", _in_flight, poll_task)
