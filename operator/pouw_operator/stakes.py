"""kopf handlers for Stake: buy a ticket once through pod <node>-<replica>'s API, then follow
it until it is on chain.

- create / resume: unless status holds a ticket id (or a refusal), find the PoUWNode (missing:
  condition NodeNotFound, retried slowly), POST /stake with the amount and role, write ticketId,
  lockedAmount and phase Pending, or Active when the node says the ticket is mined already. A
  refusal (a balance below the amount) fails the Stake with the node's reason.
- the poller (payments.Poller, every settings.poll_interval_s) reads the pod's GET /economics for
  each Pending Stake with a ticket, and makes it Active once the ticket is listed there.

Buying once. The node deduplicates purchases by request id (POST /stake `request_id`, kept in
its data dir) and the operator always sends `stake-<uid>` to the same pod (the spec cannot
change), so an operator restarted before it wrote the ticket id gets the same ticket back.

Deleting a Stake unlocks nothing: the ticket stays locked on chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw_operator import payments, runtime
from pouw_operator.conditions import Condition, condition
from pouw_operator.directory import NodeEndpoint
from pouw_operator.kube import STAKE
from pouw_operator.task_status import failure_of, status_changes

RESOURCE = payments.resource(STAKE)
KIND = STAKE.kind
BOUGHT = "Bought"
"""True once the pod's node signed the purchase; False when it refused or there is no pod."""
CONFIRMED = "Confirmed"
"""True once the ticket is on chain (the node's GET /economics lists it)."""


def request_id(uid: str) -> str:
    """The idempotency key of a Stake's purchase: a restarted operator never buys twice."""
    return f"stake-{uid}"


def pod_of(spec: Mapping[str, Any]) -> tuple[str, int]:
    replica = spec.get("replica", 0)
    if not isinstance(replica, int) or isinstance(replica, bool):
        replica = 0
    return str(spec.get("node", "")), replica


def _buy(client: NodeClient, spec: Mapping[str, Any], uid: str) -> dict[str, Any]:
    role = spec.get("role")
    with client:
        return client.stake(
            float(spec["amount"]), str(role) if role else None, request_id=request_id(uid)
        )


def live_ticket(economics: Mapping[str, Any], ticket_id: str) -> Mapping[str, Any] | None:
    """The ticket in a node's GET /economics answer; None while it is not on chain."""
    for ticket in economics.get("tickets") or ():
        if isinstance(ticket, Mapping) and ticket.get("ticket_id") == ticket_id:
            return ticket
    return None


def _amount(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def bought(
    endpoint: NodeEndpoint, ticket: Mapping[str, Any], generation: int
) -> tuple[dict[str, Any], list[Condition]]:
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
    fields = {
        "phase": "Active" if confirmed else "Pending",
        "ticketId": ticket_id,
        "lockedAmount": _amount(ticket.get("amount")),
        "message": message + ("" if confirmed else "; waiting for a block"),
    }
    return fields, conditions


async def buy_ticket(payment: payments.Payment, spec: Mapping[str, Any]) -> payments.Outcome:
    """Buy the ticket through pod <node>-<replica> (no such PoUWNode: NoNode)."""
    nodes, namespace = payments.directory(), payment.namespace
    node, replica = pod_of(spec)
    endpoint = await asyncio.to_thread(nodes.for_stake, namespace, node, replica)
    client = await asyncio.to_thread(nodes.client, namespace, endpoint)
    ticket = await asyncio.to_thread(_buy, client, spec, payment.uid)
    return bought(endpoint, ticket, payment.generation)


@kopf.on.event(*RESOURCE)
def forget_stake(event: Mapping[str, Any], uid: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        runtime.metrics().forget(KIND, uid)


# -- following ------------------------------------------------------------------------------


def _pending(status: Mapping[str, Any]) -> bool:
    """Bought and not yet on chain: what the poller follows."""
    return bool(status.get("ticketId")) and status.get("phase") == "Pending"


def _economics(url: str) -> dict[str, Any]:
    with NodeClient(url) as client:
        return client.economics()


async def confirm_ticket(item: payments.Tracked) -> None:
    """Active once the pod's node lists the ticket among its live ones."""
    status, generation = item.status, item.generation
    node, replica = pod_of(item.spec)
    url = payments.directory().for_pod(item.namespace, f"{node}-{replica}").url
    ticket_id = str(status["ticketId"])
    try:
        economics = await asyncio.to_thread(_economics, url)
    except ApiError as error:
        failure = failure_of(error)
        unknown = condition(CONFIRMED, "Unknown", failure.reason, failure.message, generation)
        await payments.write(STAKE, item, status_changes(status, generation, {}, [unknown]))
        raise kopf.TemporaryError(f"{failure.reason}: {failure.message}") from None
    ticket = live_ticket(economics, ticket_id)
    if ticket is None:
        return
    message = f"ticket {ticket_id} is on chain"
    fields = {
        "phase": "Active",
        "message": message,
        "lockedAmount": _amount(ticket.get("amount")) or status.get("lockedAmount"),
    }
    on_chain = condition(CONFIRMED, True, "OnChain", message, generation)
    await payments.write(STAKE, item, status_changes(status, generation, fields, [on_chain]))
    runtime.metrics().set_phase(KIND, item.uid, "Active")


payments.pay_once(STAKE, BOUGHT, "ticketId", "Pending", buy_ticket)
payments.follow(STAKE, "stake_index", "stake_ticket_poller", _pending, confirm_ticket)
