"""What the MLTask and Stake handlers share: each resource is one payment made through a node's
API (an MLTask pays for its task, a Stake buys its ticket), then followed until the chain
settles it. A handler module says what differs, and these register its kopf handlers:

- `pay_once`: the create/resume handler. Unless status shows the payment made (its id) or
  refused (phase Failed), pay through a node and write the outcome as the phase, a message
  and a condition. A refusal (an ApiError the node will repeat, or `Refused`) fails the
  resource; no node, or no answer, is a condition and a kopf.TemporaryError with a growing
  delay.
- `follow`: a kopf index of the resources in flight and one `Poller` over it, started and
  stopped with the operator. It is one task for the whole operator, and not a kopf timer:
  kopf puts a finalizer on every object a timer serves, and these resources need none.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from pouw.api.client import ApiError
from pouw_operator import kube, runtime
from pouw_operator.conditions import Condition, condition
from pouw_operator.directory import KubernetesReader, NodeDirectory, NoNode
from pouw_operator.kube import Kind, KubeError
from pouw_operator.task_status import backoff, failure_of, generation_of, status_changes

SLOW_RETRY_FACTOR = 6
"""A missing node is retried this many poll intervals apart, doubling: a person must act."""

Outcome = tuple[Mapping[str, Any], Sequence[Condition]]
"""The status fields (a phase among them) and conditions of a payment the node accepted."""


def resource(kind: Kind) -> tuple[str, str, str]:
    """kopf's (group, version, plural) of a custom resource kind."""
    group, version = kind.api_version.split("/")
    return group, version, kind.plural


def directory() -> NodeDirectory:
    return NodeDirectory(runtime.settings(), KubernetesReader(kube.kube()))


def stage(patch: kopf.Patch, changes: Mapping[str, Any]) -> None:
    """Put status changes in kopf's patch (sent to the status subresource)."""
    for key, value in changes.items():
        patch.status[key] = value


# -- paying once ----------------------------------------------------------------------------


class Refused(Exception):
    """A payment that asking again cannot make (a spec no node takes): the resource fails."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Payment:
    """One run of a create/resume handler that pays through a node. What it writes goes in
    kopf's patch: the phase, a message and the condition `condition_type` (Submitted for an
    MLTask, Bought for a Stake)."""

    kind: str
    condition_type: str
    namespace: str
    name: str
    uid: str
    generation: int
    patch: kopf.Patch
    status: Mapping[str, Any]
    """What the changes are computed against: the status as last written (a payer that
    patches status itself before paying sets it to what that patch returned)."""

    async def once(
        self, paid: str, paid_phase: str, pay: Callable[[], Awaitable[Outcome]], retry: int
    ) -> None:
        """Pay, unless status holds the `paid` field (the phase counted is then `paid_phase`
        if status has none) or shows a refusal, and write the outcome; the handler's run is
        timed and counted in the operator's metrics."""
        metrics = runtime.metrics()
        with metrics.observe(self.kind):
            phase = self.status.get("phase")
            if self.status.get(paid) or phase == "Failed":
                metrics.set_phase(self.kind, self.uid, str(phase or paid_phase))
                return
            await self._pay(pay, retry)

    async def _pay(self, pay: Callable[[], Awaitable[Outcome]], retry: int) -> None:
        interval = runtime.settings().poll_interval_s
        try:
            fields, conditions = await pay()
        except Refused as error:
            self.settle("Failed", error.reason, error.message, False)
            return
        except NoNode as error:
            self.settle("Pending", error.reason, error.message, False)
            delay = backoff(retry, SLOW_RETRY_FACTOR * interval)
            raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=delay) from None
        except KubeError as error:
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=delay) from None
        except ApiError as error:
            failure = failure_of(error)
            if failure.permanent:
                self.settle("Failed", failure.reason, failure.message, False)
                return
            self.settle("Pending", failure.reason, failure.message, None)
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay=delay) from None
        self.write(fields, conditions)

    def settle(self, phase: str, reason: str, message: str, paid: bool | None) -> None:
        """Write a phase and its message, and the condition: True (paid), False (refused, or
        no node), Unknown (None: not known yet)."""
        said = condition(
            self.condition_type,
            "Unknown" if paid is None else paid,
            reason,
            message,
            self.generation,
        )
        self.write({"phase": phase, "message": message}, [said])

    def write(self, fields: Mapping[str, Any], conditions: Sequence[Condition]) -> None:
        stage(self.patch, status_changes(self.status, self.generation, fields, conditions))
        runtime.metrics().set_phase(self.kind, self.uid, str(fields["phase"]))


Payer = Callable[[Payment, Mapping[str, Any]], Awaitable[Outcome]]
"""Pays for one resource (its spec) through a node: raises NoNode, KubeError, ApiError or
Refused, as `Payment._pay` handles them."""


def pay_once(kind: Kind, condition_type: str, paid: str, paid_phase: str, payer: Payer) -> None:
    """Register with kopf the create/resume handler of `kind`, under the payer's name (the
    handler id kopf records): a `Payment.once` through `payer`, with the condition
    `condition_type`. Status holds the `paid` field once the node accepted the payment; such a
    status without a phase counts as `paid_phase`."""

    @kopf.on.resume(*resource(kind), id=payer.__name__)
    @kopf.on.create(*resource(kind), id=payer.__name__)
    async def pay(
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
        generation = generation_of(meta)
        payment = Payment(
            kind.kind, condition_type, namespace or "", name, uid, generation, patch, status
        )
        await payment.once(paid, paid_phase, lambda: payer(payment, spec), retry)


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
        except Exception as error:
            failures = self.failures.get(item.uid, 0)
            self.failures[item.uid] = failures + 1
            self.next_at[item.uid] = started + backoff(failures, interval)
            where = f"{self.kind.kind} {item.namespace}/{item.name}"
            if isinstance(error, kopf.TemporaryError):
                logger.warning(f"{where}: {error}")
            else:
                logger.exception(f"{where}: poll failed")
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


def follow(
    kind: Kind,
    index_id: str,
    poller_name: str,
    in_flight: Callable[[Mapping[str, Any]], bool],
    poll: Poll,
) -> None:
    """Register with kopf what follows `kind`: the index `index_id` of the resources whose
    status is `in_flight`, and a Poller (an asyncio task named `poller_name`) that runs `poll`
    on each of them, from the operator's startup to its cleanup."""

    @kopf.index(*resource(kind), id=index_id)
    def index_in_flight(
        namespace: str | None,
        name: str,
        uid: str,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        **_: Any,
    ) -> dict[str, Tracked] | None:
        if not in_flight(status):
            return None
        return tracked(namespace, name, uid, meta, spec, status)

    @kopf.on.startup(id=f"start_{poller_name}")
    async def start_poller(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
        index: kopf.Index[str, Tracked] = kwargs[index_id]  # kopf passes its indexes by name
        poller = Poller(kind, poll)
        memo[poller_name] = asyncio.create_task(poller.run(index, logger), name=poller_name)

    @kopf.on.cleanup(id=f"stop_{poller_name}")
    async def stop_poller(memo: kopf.Memo, **_: Any) -> None:
        await runtime.stop_background(memo, poller_name)
