"""The payment flow the MLTask and Stake handlers share. Each such resource is one payment made
through a node's API (an MLTask pays for its task, a Stake buys its ticket), then followed until
the chain settles it. A handler module makes one `PaymentFlow` for its kind, saying what
differs, and calls it from its own kopf handlers:

- `pay_once`, from the create/resume handler: unless status shows the payment made (its
  receipt, the task or ticket id) or refused (phase Failed), pay through a node and write the
  outcome into kopf's patch as the phase, a message and a condition. A refusal (an ApiError the
  node will repeat, or `Refused`) fails the resource; no node, or no answer, is a condition and
  a kopf.TemporaryError with a growing delay.
- `index_entry`, from the kopf index of the resources in flight, and `follow`, from the startup
  handler: one `Poller` over that index for the whole operator. It is not a kopf timer: kopf
  puts a finalizer on every object a timer serves, and these resources need none.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

import kopf

from pouw.api.client import ApiError
from pouw_operator.conditions import Condition, condition
from pouw_operator.directory import KubernetesReader, NodeDirectory, NoNode
from pouw_operator.errors import OperatorError
from pouw_operator.kube import AsyncKube, Kind, KubeError
from pouw_operator.memo import OperatorMemo
from pouw_operator.resources import PaidStatus, StakePhase, TaskPhase, generation_of
from pouw_operator.task_status import backoff, failure_of, status_changes

SLOW_RETRY_FACTOR = 6
"""A missing node is retried this many poll intervals apart, doubling: a person must act."""

SpecT = TypeVar("SpecT", bound=Mapping[str, object])
StatusT = TypeVar("StatusT", bound=PaidStatus)

Outcome = tuple[PaidStatus, Sequence[Condition]]
"""The status fields (a phase among them) and conditions of a payment the node accepted."""


def node_directory(memo: OperatorMemo) -> NodeDirectory:
    return NodeDirectory(memo.settings, KubernetesReader(memo.kube.sync()))


def stage(patch: kopf.Patch, changes: Mapping[str, object]) -> None:
    """Put status changes in kopf's patch (sent to the status subresource)."""
    for key, value in changes.items():
        patch.status[key] = value


async def write(
    kube: AsyncKube, kind: Kind, item: Tracked[SpecT, StatusT], changes: Mapping[str, object]
) -> None:
    """Patch the status subresource with `changes` (if any); a resource deleted meanwhile is
    no error. The Kind is an argument, not a PaymentFlow's: tests/chart derives the operator's
    RBAC from the Kind constants its callers pass."""
    if not changes:
        return
    try:
        await kube.patch(kind, item.namespace, item.name, {"status": dict(changes)}, "status")
    except KubeError as error:
        if not error.not_found:
            raise kopf.TemporaryError(f"Kubernetes API: {error}") from None


class Refused(OperatorError):
    """A payment that asking again cannot make (a spec no node takes): the resource fails."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Payment(Generic[StatusT]):
    """One run of a create/resume handler: the resource it pays for, and kopf's patch that
    what it learns goes into."""

    namespace: str
    name: str
    uid: str
    generation: int
    patch: kopf.Patch
    status: StatusT
    """What the changes are computed against: the status as last written (a payer that
    patches status itself before paying sets it to what that patch returned)."""


@dataclass(frozen=True)
class Tracked(Generic[SpecT, StatusT]):
    """A resource the poller follows, as of its latest watch event."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: SpecT
    status: StatusT


Poll = Callable[[OperatorMemo, Tracked[SpecT, StatusT]], Awaitable[None]]


@dataclass(frozen=True)
class PaymentFlow(Generic[SpecT, StatusT]):
    """What differs between the kinds paid for through a node, and the flow they share."""

    kind: Kind
    condition_type: str
    """Submitted for an MLTask, Bought for a Stake: True once paid, False when refused or
    no node, Unknown while no node answers."""
    paid_phase: TaskPhase | StakePhase
    """The phase a paid resource counts under while its status has none."""
    receipt: Callable[[StatusT], str | None]
    """The payment's id in status (the task or ticket id), None until paid."""
    in_flight: Callable[[StatusT], bool]
    """Whether the poller follows a resource of this status."""

    # -- paying once ------------------------------------------------------------------------

    async def pay_once(
        self,
        memo: OperatorMemo,
        payment: Payment[StatusT],
        pay: Callable[[], Awaitable[Outcome]],
        retry: int,
    ) -> None:
        """Pay, unless status shows the payment made or refused, and write the outcome; the
        handler's run is timed and counted in the operator's metrics."""
        metrics = memo.metrics
        with metrics.observe(self.kind.kind):
            phase = payment.status.get("phase")
            if self.receipt(payment.status) or phase == "Failed":
                metrics.set_phase(self.kind.kind, payment.uid, str(phase or self.paid_phase))
                return
            await self._pay(memo, payment, pay, retry)

    async def _pay(
        self,
        memo: OperatorMemo,
        payment: Payment[StatusT],
        pay: Callable[[], Awaitable[Outcome]],
        retry: int,
    ) -> None:
        interval = memo.settings.poll_interval_s
        try:
            fields, conditions = await pay()
        except Refused as error:
            self.settle(memo, payment, "Failed", error.reason, error.message, False)
            return
        except NoNode as error:
            self.settle(memo, payment, "Pending", error.reason, error.message, False)
            delay = backoff(retry, SLOW_RETRY_FACTOR * interval)
            raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=delay) from None
        except KubeError as error:
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=delay) from None
        except ApiError as error:
            failure = failure_of(error)
            if failure.permanent:
                self.settle(memo, payment, "Failed", failure.reason, failure.message, False)
                return
            self.settle(memo, payment, "Pending", failure.reason, failure.message, None)
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay=delay) from None
        self.write(memo, payment, fields, conditions)

    def settle(
        self,
        memo: OperatorMemo,
        payment: Payment[StatusT],
        phase: TaskPhase | StakePhase,
        reason: str,
        message: str,
        paid: bool | None,
    ) -> None:
        """Write a phase and its message, and the condition: True (paid), False (refused, or
        no node), Unknown (None: not known yet)."""
        said = condition(
            self.condition_type,
            "Unknown" if paid is None else paid,
            reason,
            message,
            payment.generation,
        )
        self.write(memo, payment, {"phase": phase, "message": message}, [said])

    def write(
        self,
        memo: OperatorMemo,
        payment: Payment[StatusT],
        fields: PaidStatus,
        conditions: Sequence[Condition],
    ) -> None:
        changes = status_changes(payment.status, payment.generation, fields, conditions)
        stage(payment.patch, changes)
        memo.metrics.set_phase(self.kind.kind, payment.uid, str(fields["phase"]))

    # -- following --------------------------------------------------------------------------

    def index_entry(
        self,
        namespace: str,
        name: str,
        uid: str,
        meta: Mapping[str, object],
        spec: SpecT,
        status: StatusT,
    ) -> dict[str, Tracked[SpecT, StatusT]] | None:
        """The kopf index entry (by uid) of a resource in flight, its spec and status copied out
        of kopf's body; None for any other."""
        if not self.in_flight(status):
            return None
        tracked = Tracked(
            namespace,
            name,
            uid,
            generation_of(meta),
            cast(SpecT, copy.deepcopy(dict(spec))),
            cast(StatusT, copy.deepcopy(dict(status))),
        )
        return {uid: tracked}

    def follow(
        self,
        memo: OperatorMemo,
        name: str,
        index: kopf.Index[str, Tracked[SpecT, StatusT]],
        poll: Poll[SpecT, StatusT],
        logger: kopf.Logger,
    ) -> None:
        """Start a Poller over `index` running `poll`: a background task named `name` of the
        memo, until the cleanup handler stops it."""
        poller = Poller(memo, self.kind, poll)
        memo.start_background(name, poller.run(index, logger))


@dataclass
class Poller(Generic[SpecT, StatusT]):
    """Polls every resource of a kopf index once a poll interval, each on its own schedule:
    a failed poll (a kopf.TemporaryError) is retried after a growing delay, and counted as a
    retry in the operator's metrics, like a handler's."""

    memo: OperatorMemo
    kind: Kind
    poll: Poll[SpecT, StatusT]
    next_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    async def run(
        self, index: kopf.Index[str, Tracked[SpecT, StatusT]], logger: kopf.Logger
    ) -> None:
        while True:
            now = time.monotonic()
            present = {uid: next(iter(items)) for uid, items in index.items() if items}
            for gone in set(self.next_at) - set(present):
                self.next_at.pop(gone, None)
                self.failures.pop(gone, None)
            due = [item for uid, item in present.items() if self.next_at.get(uid, 0.0) <= now]
            await asyncio.gather(*(self._poll_one(item, logger) for item in due))
            await asyncio.sleep(self.memo.settings.poll_interval_s)

    async def _poll_one(self, item: Tracked[SpecT, StatusT], logger: kopf.Logger) -> None:
        started = time.monotonic()
        interval = self.memo.settings.poll_interval_s
        try:
            with self.memo.metrics.observe(self.kind.kind):
                await self.poll(self.memo, item)
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
