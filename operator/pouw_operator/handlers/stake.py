"""kopf handlers for Stake (stakes.pouw.network/v1alpha1): buy a ticket once through pod
<node>-<replica>'s API, then follow it until it is on chain.

- create / resume (`buy_ticket`): unless status holds a ticket id (or a refusal), find the
  PoUWNode (missing: condition NodeNotFound, retried slowly), POST /stake with the amount and
  role, write ticketId, lockedAmount and phase Pending, or Active when the node says the ticket
  is mined already. A refusal (a balance below the amount) fails the Stake with the node's
  reason.
- a poller (every settings.poll_interval_s) reads the pod's GET /economics for each Pending
  Stake with a ticket, over the kopf index `stake_index`, and makes it Active once the ticket
  is listed there.

Buying once. The node deduplicates purchases by request id (POST /stake `request_id`, kept in
its data dir) and the operator always sends `stake-<uid>` to the same pod (the spec cannot
change), so an operator restarted before it wrote the ticket id gets the same ticket back.

Deleting a Stake unlocks nothing: the ticket stays locked on chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw_operator.conditions import Condition, condition
from pouw_operator.directory import NodeEndpoint
from pouw_operator.kube import STAKE
from pouw_operator.memo import OperatorMemo
from pouw_operator.payments import Outcome, Payment, PaymentFlow, Tracked, node_directory, write
from pouw_operator.resources import StakeSpec, StakeStatus, generation_of
from pouw_operator.task_status import failure_of, status_changes

RESOURCE = STAKE.resource
KIND = STAKE.kind
INDEX = "stake_index"
"""kopf passes the index to every handler as a keyword argument of this name."""
POLLER = "stake_ticket_poller"
"""The poller's background task in the memo."""
BOUGHT = "Bought"
"""True once the pod's node signed the purchase; False when it refused or there is no pod."""
CONFIRMED = "Confirmed"
"""True once the ticket is on chain (the node's GET /economics lists it)."""

Ticket = Tracked[StakeSpec, StakeStatus]


def request_id(uid: str) -> str:
    """The idempotency key of a Stake's purchase: a restarted operator never buys twice."""
    return f"stake-{uid}"


def pod_of(spec: StakeSpec) -> tuple[str, int]:
    replica = spec.get("replica", 0)
    if not isinstance(replica, int) or isinstance(replica, bool):
        replica = 0
    return str(spec.get("node", "")), replica


def live_ticket(economics: Mapping[str, Any], ticket_id: str) -> Mapping[str, Any] | None:
    """The ticket in a node's GET /economics answer; None while it is not on chain."""
    for ticket in economics.get("tickets") or ():
        if isinstance(ticket, Mapping) and ticket.get("ticket_id") == ticket_id:
            return ticket
    return None


def _amount(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ticket_id(status: StakeStatus) -> str | None:
    return status.get("ticketId")


def _pending(status: StakeStatus) -> bool:
    """Bought and not yet on chain: what the poller follows."""
    return bool(status.get("ticketId")) and status.get("phase") == "Pending"


FLOW = PaymentFlow[StakeSpec, StakeStatus](
    STAKE, BOUGHT, "Pending", receipt=_ticket_id, in_flight=_pending
)


# -- buying ---------------------------------------------------------------------------------


# kopf records each resource's progress under this id: a new one reruns it on every resource.
@kopf.on.resume(*RESOURCE, id="buy_ticket")
@kopf.on.create(*RESOURCE, id="buy_ticket")
async def buy_ticket(
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
    typed_spec, typed_status = cast(StakeSpec, spec), cast(StakeStatus, status)
    payment = Payment(namespace or "", name, uid, generation_of(meta), patch, typed_status)
    await FLOW.pay_once(memo, payment, lambda: pay_for_ticket(memo, payment, typed_spec), retry)


async def pay_for_ticket(
    memo: OperatorMemo, payment: Payment[StakeStatus], spec: StakeSpec
) -> Outcome:
    """Buy the ticket through pod <node>-<replica> (no such PoUWNode: NoNode)."""
    nodes, namespace = node_directory(memo), payment.namespace
    node, replica = pod_of(spec)
    endpoint = await asyncio.to_thread(nodes.for_stake, namespace, node, replica)
    client = await asyncio.to_thread(nodes.client, namespace, endpoint)
    ticket = await asyncio.to_thread(_buy, client, spec, payment.uid)
    return bought(endpoint, ticket, payment.generation)


def _buy(client: NodeClient, spec: StakeSpec, uid: str) -> dict[str, Any]:
    role = spec.get("role")
    with client:
        return client.stake(
            float(spec["amount"]), str(role) if role else None, request_id=request_id(uid)
        )


def bought(
    endpoint: NodeEndpoint, ticket: Mapping[str, Any], generation: int
) -> tuple[StakeStatus, list[Condition]]:
    """Status fields and conditions of a ticket the node just signed (POST /stake's answer)."""
    ticket_id = str(ticket.get("ticket_id", ""))
    role = str(ticket.get("role", "")).lower()
    message = f"ticket {ticket_id} for {role} bought by {endpoint.pod}"
    confirmed = ticket.get("confirmed") is True
    conditions = [
        condition(BOUGHT, True, "TicketSigned", message, generation),
        condition(CONFIRMED, True, "OnChain", "the ticket is mined", generation)
        if confirmed
        else condition(CONFIRMED, False, "AwaitingBlock", "waiting for a block", generation),
    ]
    fields = StakeStatus(
        phase="Active" if confirmed else "Pending",
        ticketId=ticket_id,
        lockedAmount=_amount(ticket.get("amount")),
        message=message + ("" if confirmed else "; waiting for a block"),
    )
    return fields, conditions


@kopf.on.event(*RESOURCE)
def forget_stake(event: kopf.RawEvent, uid: str, memo: OperatorMemo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.metrics.forget(KIND, uid)


# -- following ------------------------------------------------------------------------------


@kopf.index(*RESOURCE, id=INDEX)
def stake_index(
    namespace: str | None,
    name: str,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[str, Ticket] | None:
    typed_spec, typed_status = cast(StakeSpec, spec), cast(StakeStatus, status)
    return FLOW.index_entry(namespace or "", name, uid, meta, typed_spec, typed_status)


@kopf.on.startup(id="start_stake_ticket_poller")
async def start_stake_ticket_poller(memo: OperatorMemo, logger: kopf.Logger, **kwargs: Any) -> None:
    index: kopf.Index[str, Ticket] = kwargs[INDEX]  # kopf passes its indexes by name
    FLOW.follow(memo, POLLER, index, confirm_ticket, logger)


@kopf.on.cleanup(id="stop_stake_ticket_poller")
async def stop_stake_ticket_poller(memo: OperatorMemo, **_: Any) -> None:
    await memo.stop_background(POLLER)


def _economics(url: str) -> dict[str, Any]:
    with NodeClient(url) as client:
        return client.economics()


async def confirm_ticket(memo: OperatorMemo, item: Ticket) -> None:
    """Active once the pod's node lists the ticket among its live ones."""
    status, generation = item.status, item.generation
    node, replica = pod_of(item.spec)
    url = node_directory(memo).for_pod(item.namespace, f"{node}-{replica}").url
    ticket_id = str(status["ticketId"])
    try:
        economics = await asyncio.to_thread(_economics, url)
    except ApiError as error:
        failure = failure_of(error)
        unknown = condition(CONFIRMED, "Unknown", failure.reason, failure.message, generation)
        await write(memo.kube, STAKE, item, status_changes(status, generation, {}, [unknown]))
        raise kopf.TemporaryError(f"{failure.reason}: {failure.message}") from None
    ticket = live_ticket(economics, ticket_id)
    if ticket is None:
        return
    message = f"ticket {ticket_id} is on chain"
    fields = StakeStatus(
        phase="Active",
        message=message,
        lockedAmount=_amount(ticket.get("amount")) or status.get("lockedAmount"),
    )
    on_chain = condition(CONFIRMED, True, "OnChain", message, generation)
    # The gauge first: whoever sees the new status sees it counted too.
    memo.metrics.set_phase(KIND, item.uid, "Active")
    await write(memo.kube, STAKE, item, status_changes(status, generation, fields, [on_chain]))
