"""kopf handlers for MLTask (mltasks.pouw.network/v1alpha1): pay for the task once through a
node's API, then mirror the network's view of it into status until it completes or fails.

- create / resume (`submit_task`): unless status holds a task id (or a refusal), choose a node
  (NodeDirectory), pin it in status, pay through its API, write taskId, submittedTo and phase
  Submitted. A node that refuses (unknown dataset, fee above the balance) fails the MLTask with
  its reason; no node, or no answer, is a condition and a kopf.TemporaryError with a growing
  delay.
- a poller (every settings.poll_interval_s) asks the pinned pod for each MLTask in flight
  (GET /tasks/{id}) and writes what changed: one task for the whole operator, over the kopf
  index `mltask_index` (payments.PaymentFlow says why not a kopf timer).

Paying once. The node deduplicates payments by request id and the operator always sends
`mltask-<uid>`; but that memory is one node's, so before paying the operator writes the pod it
pays through (status.submittedTo, at once, not at the handler's end), and an operator
restarted before it wrote the task id asks that same pod again: an MLTask pays at most once.

Deleting an MLTask drops it from the index, so it is polled no more; nothing is undone on
chain: the payment is final, the network trains the task to its end and pays its workers.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw_operator.conditions import condition, set_condition
from pouw_operator.directory import NodeEndpoint
from pouw_operator.kube import MLTASK
from pouw_operator.memo import OperatorMemo
from pouw_operator.payments import (
    Outcome,
    Payment,
    PaymentFlow,
    Refused,
    Tracked,
    node_directory,
    write,
)
from pouw_operator.resources import MLTaskSpec, MLTaskStatus, generation_of
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

RESOURCE = MLTASK.resource
KIND = MLTASK.kind
INDEX = "mltask_index"
"""kopf passes the index to every handler as a keyword argument of this name."""
POLLER = "mltask_status_poller"
"""The poller's background task in the memo."""

Task = Tracked[MLTaskSpec, MLTaskStatus]


def _task_id(status: MLTaskStatus) -> str | None:
    return status.get("taskId")


def _in_flight(status: MLTaskStatus) -> bool:
    """Paid for and not finished: what the poller follows."""
    return bool(status.get("taskId")) and status.get("phase") not in FINAL_PHASES


FLOW = PaymentFlow[MLTaskSpec, MLTaskStatus](
    MLTASK, SUBMITTED, "Submitted", receipt=_task_id, in_flight=_in_flight
)


# -- paying ---------------------------------------------------------------------------------


# kopf records each resource's progress under this id: a new one reruns it on every resource.
@kopf.on.resume(*RESOURCE, id="submit_task")
@kopf.on.create(*RESOURCE, id="submit_task")
async def submit_task(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    uid: str,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    retry: int,
    memo: OperatorMemo,
    **_: Any,
) -> None:
    # kopf's read-only views, in the shape the API server checked them against (the CRD).
    typed_spec, typed_status = cast(MLTaskSpec, spec), cast(MLTaskStatus, status)
    payment = Payment(namespace or "", name, uid, generation_of(meta), patch, typed_status)
    await FLOW.pay_once(memo, payment, lambda: pay_for_task(memo, payment, typed_spec), retry)


async def pay_for_task(
    memo: OperatorMemo, payment: Payment[MLTaskStatus], spec: MLTaskSpec
) -> Outcome:
    """Pay for the task through a node: pin one in status (or take the one pinned), then pay."""
    namespace, status, generation = payment.namespace, payment.status, payment.generation
    try:
        body = submission(spec, payment.uid)
    except SpecError as error:
        raise Refused("InvalidSpec", str(error)) from None
    nodes = node_directory(memo)
    selector = (spec.get("networkSelector") or {}).get("matchLabels") or {}
    pinned = status.get("submittedTo")
    if pinned:
        endpoint = nodes.for_pod(namespace, str(pinned))
    else:
        endpoint = await asyncio.to_thread(nodes.for_task, namespace, selector)
        pinning = _submitting(status, endpoint, generation)
        marked = await memo.kube.patch(MLTASK, namespace, payment.name, pinning, "status")
        payment.status = cast(MLTaskStatus, marked.get("status") or {})
    client = await asyncio.to_thread(nodes.client, namespace, endpoint)
    task_id = await asyncio.to_thread(_pay, client, body)
    message = f"paid through {endpoint.pod}: task {task_id}"
    fields = MLTaskStatus(
        phase="Submitted", taskId=task_id, submittedTo=endpoint.pod, message=message
    )
    return fields, [condition(SUBMITTED, True, "Accepted", message, generation)]


def _pay(client: NodeClient, body: Submission) -> str:
    with client:
        return client.submit_task(body.spec, body.reward, body.fee, body.request_id)


def _submitting(
    status: MLTaskStatus, endpoint: NodeEndpoint, generation: int
) -> dict[str, MLTaskStatus]:
    """The status patch that pins the pod before paying."""
    message = f"paying through {endpoint.pod}"
    conditions = set_condition(
        status.get("conditions"),
        condition(SUBMITTED, "Unknown", "Submitting", message, generation),
    )
    return {
        "status": MLTaskStatus(
            phase="Pending",
            submittedTo=endpoint.pod,
            message=message,
            conditions=conditions,
            observedGeneration=generation,
        )
    }


@kopf.on.event(*RESOURCE)
def forget_task(event: kopf.RawEvent, uid: str, memo: OperatorMemo, **_: Any) -> None:
    """A deleted MLTask leaves the phase gauge; there is nothing to undo on chain."""
    if event.get("type") == "DELETED":
        memo.metrics.forget(KIND, uid)


# -- following ------------------------------------------------------------------------------


@kopf.index(*RESOURCE, id=INDEX)
def mltask_index(
    namespace: str | None,
    name: str,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[str, Task] | None:
    typed_spec, typed_status = cast(MLTaskSpec, spec), cast(MLTaskStatus, status)
    return FLOW.index_entry(namespace or "", name, uid, meta, typed_spec, typed_status)


@kopf.on.startup(id="start_mltask_status_poller")
async def start_mltask_status_poller(
    memo: OperatorMemo, logger: kopf.Logger, **kwargs: Any
) -> None:
    index: kopf.Index[str, Task] = kwargs[INDEX]  # kopf passes its indexes by name
    FLOW.follow(memo, POLLER, index, poll_task, logger)


@kopf.on.cleanup(id="stop_mltask_status_poller")
async def stop_mltask_status_poller(memo: OperatorMemo, **_: Any) -> None:
    await memo.stop_background(POLLER)


def _task_view(url: str, task_id: str) -> dict[str, Any]:
    with NodeClient(url) as client:  # reads need no token
        return client.task(task_id)


async def poll_task(memo: OperatorMemo, item: Task) -> None:
    """Mirror the pinned pod's view of the task (GET /tasks/{id}) into status."""
    status, generation = item.status, item.generation
    pod = str(status.get("submittedTo", ""))
    url = node_directory(memo).for_pod(item.namespace, pod).url
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
        await write(memo.kube, MLTASK, item, status_changes(status, generation, {}, [out_of_sync]))
        raise kopf.TemporaryError(f"{reason}: {message}") from None
    conditions = view_conditions(mirrored, pod, generation)
    # The gauge first: whoever sees the new status sees it counted too.
    memo.metrics.set_phase(KIND, item.uid, mirrored.get("phase", "Submitted"))
    await write(memo.kube, MLTASK, item, status_changes(status, generation, mirrored, conditions))
