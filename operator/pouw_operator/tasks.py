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
import contextlib
import copy
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw_operator import kube, runtime
from pouw_operator.conditions import condition, set_condition
from pouw_operator.directory import KubernetesReader, NodeDirectory, NodeEndpoint, NoNode
from pouw_operator.kube import MLTASK, Kind, KubeError
from pouw_operator.task_status import (
    FINAL_PHASES,
    SUBMITTED,
    SYNCED,
    Phase,
    SpecError,
    Submission,
    backoff,
    failure_of,
    generation_of,
    status_changes,
    status_from_view,
    submission,
    view_conditions,
)

GROUP, VERSION = MLTASK.api_version.split("/")
RESOURCE = (GROUP, VERSION, MLTASK.plural)
KIND = MLTASK.kind
SLOW_RETRY_FACTOR = 6
"""A missing node is retried this many poll intervals apart, doubling: a person must act."""
POLLER = "mltask_status_poller"


def directory() -> NodeDirectory:
    return NodeDirectory(runtime.settings(), KubernetesReader(kube.kube()))


def stage(patch: kopf.Patch, changes: Mapping[str, Any]) -> None:
    """Put status changes in kopf's patch (sent to the status subresource)."""
    for key, value in changes.items():
        patch.status[key] = value


# -- paying ---------------------------------------------------------------------------------


def _pay(client: NodeClient, body: Submission) -> str:
    with client:
        return client.submit_task(body.spec, body.reward, body.fee, body.request_id)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def submit_task(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    uid: str,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    retry: int,
    **_: Any,
) -> None:
    """Pay for the task through a node, unless status shows it paid (or refused) already."""
    metrics = runtime.metrics()
    with metrics.observe(KIND):
        phase = status.get("phase")
        if status.get("taskId") or phase == "Failed":
            metrics.set_phase(KIND, uid, str(phase or "Submitted"))
            return
        await _submit(spec, status, generation_of(meta), uid, name, namespace or "", patch, retry)


async def _submit(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    generation: int,
    uid: str,
    name: str,
    namespace: str,
    patch: kopf.Patch,
    retry: int,
) -> None:
    metrics = runtime.metrics()
    interval = runtime.settings().poll_interval_s
    seen: Mapping[str, Any] = status  # what the changes are computed against

    def settle(phase: Phase, reason: str, message: str, submitted: bool | None) -> None:
        said = condition(
            SUBMITTED, "Unknown" if submitted is None else submitted, reason, message, generation
        )
        fields = {"phase": phase, "message": message}
        stage(patch, status_changes(seen, generation, fields, [said]))
        metrics.set_phase(KIND, uid, phase)

    try:
        body = submission(spec, uid)
    except SpecError as error:
        settle("Failed", "InvalidSpec", str(error), False)
        return
    nodes = directory()
    selector = (spec.get("networkSelector") or {}).get("matchLabels") or {}
    pinned = status.get("submittedTo")
    try:
        if pinned:
            endpoint = nodes.for_pod(namespace, str(pinned))
        else:
            endpoint = await asyncio.to_thread(nodes.for_task, namespace, selector)
            marked = await kube.patch(
                MLTASK, namespace, name, _submitting(status, endpoint, generation), "status"
            )
            seen = marked.get("status") or {}
        client = await asyncio.to_thread(nodes.client, namespace, endpoint)
        task_id = await asyncio.to_thread(_pay, client, body)
    except NoNode as error:
        settle("Pending", error.reason, error.message, False)
        delay = backoff(retry, SLOW_RETRY_FACTOR * interval)
        raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=delay) from None
    except KubeError as error:
        raise kopf.TemporaryError(f"Kubernetes API: {error}", backoff(retry, interval)) from None
    except ApiError as error:
        failure = failure_of(error)
        if failure.permanent:
            settle("Failed", failure.reason, failure.message, False)
            return
        settle("Pending", failure.reason, failure.message, None)
        delay = backoff(retry, interval)
        raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay=delay) from None
    message = f"paid through {endpoint.pod}: task {task_id}"
    fields = {
        "phase": "Submitted",
        "taskId": task_id,
        "submittedTo": endpoint.pod,
        "message": message,
    }
    accepted = condition(SUBMITTED, True, "Accepted", message, generation)
    stage(patch, status_changes(seen, generation, fields, [accepted]))
    metrics.set_phase(KIND, uid, "Submitted")


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


@dataclass(frozen=True)
class Tracked:
    """A resource the poller follows, as of its latest watch event."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


def tracked(
    namespace: str | None,
    name: str,
    uid: str,
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
) -> dict[str, Tracked]:
    """An index entry (by uid) of a resource, its spec and status copied out of kopf's body."""
    return {
        uid: Tracked(
            namespace or "",
            name,
            uid,
            generation_of(meta),
            copy.deepcopy(dict(spec)),
            copy.deepcopy(dict(status)),
        )
    }


@kopf.index(*RESOURCE)
def mltask_index(
    namespace: str | None,
    name: str,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[str, Tracked] | None:
    """The MLTasks paid for and not finished: what the poller follows."""
    if not status.get("taskId") or status.get("phase") in FINAL_PHASES:
        return None
    return tracked(namespace, name, uid, meta, spec, status)


Poll = Callable[[Tracked], Awaitable[None]]


@dataclass
class Poller:
    """Polls every resource of a kopf index once a poll interval, each on its own schedule:
    a failed poll (a kopf.TemporaryError) is retried after a growing delay, and counted as a
    retry in the operator's metrics, like a handler's."""

    kind: Kind
    poll: Poll
    next_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    async def run(self, index: kopf.Index[str, Tracked], logger: kopf.Logger) -> None:
        while True:
            now = time.monotonic()
            present = {uid: next(iter(items)) for uid, items in index.items() if items}
            for gone in set(self.next_at) - set(present):
                self.next_at.pop(gone, None)
                self.failures.pop(gone, None)
            due = [item for uid, item in present.items() if self.next_at.get(uid, 0.0) <= now]
            await asyncio.gather(*(self._poll_one(item, logger) for item in due))
            await asyncio.sleep(runtime.settings().poll_interval_s)

    async def _poll_one(self, item: Tracked, logger: kopf.Logger) -> None:
        started = time.monotonic()
        interval = runtime.settings().poll_interval_s
        try:
            with runtime.metrics().observe(self.kind.kind):
                await self.poll(item)
        except kopf.TemporaryError as error:
            failures = self.failures.get(item.uid, 0)
            self.failures[item.uid] = failures + 1
            self.next_at[item.uid] = started + backoff(failures, interval)
            logger.warning(f"{self.kind.kind} {item.namespace}/{item.name}: {error}")
            return
        except Exception:
            failures = self.failures.get(item.uid, 0)
            self.failures[item.uid] = failures + 1
            self.next_at[item.uid] = started + backoff(failures, interval)
            logger.exception(f"{self.kind.kind} {item.namespace}/{item.name}: poll failed")
            return
        self.failures.pop(item.uid, None)
        self.next_at.pop(item.uid, None)  # due at the next round


async def write(kind: Kind, item: Tracked, changes: Mapping[str, Any]) -> None:
    """Patch the status subresource with `changes` (if any); a resource deleted meanwhile is
    no error."""
    if not changes:
        return
    try:
        await kube.patch(kind, item.namespace, item.name, {"status": dict(changes)}, "status")
    except KubeError as error:
        if not error.not_found:
            raise kopf.TemporaryError(f"Kubernetes API: {error}") from None


def _task_view(url: str, task_id: str) -> dict[str, Any]:
    with NodeClient(url) as client:  # reads need no token
        return client.task(task_id)


async def poll_task(item: Tracked) -> None:
    """Mirror the pinned pod's view of the task (GET /tasks/{id}) into status."""
    status, generation = item.status, item.generation
    pod = str(status.get("submittedTo", ""))
    url = directory().for_pod(item.namespace, pod).url
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
        await write(MLTASK, item, status_changes(status, generation, {}, [out_of_sync]))
        raise kopf.TemporaryError(f"{reason}: {message}") from None
    conditions = view_conditions(mirrored, pod, generation)
    await write(MLTASK, item, status_changes(status, generation, mirrored, conditions))
    runtime.metrics().set_phase(KIND, item.uid, mirrored.get("phase", "Submitted"))


@kopf.on.startup()
async def start_task_poller(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    index: kopf.Index[str, Tracked] = kwargs["mltask_index"]  # kopf passes its indexes by name
    poller = Poller(MLTASK, poll_task)
    memo[POLLER] = asyncio.create_task(poller.run(index, logger), name=POLLER)


@kopf.on.cleanup()
async def stop_task_poller(memo: kopf.Memo, **_: Any) -> None:
    await stop_poller(memo, POLLER)


async def stop_poller(memo: kopf.Memo, key: str) -> None:
    task = memo.get(key)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
