"""kopf handlers for Stake: buy a ticket once through pod <node>-<replica>'s API, then follow
it until it is on chain.

- create / resume: unless status holds a ticket id (or a refusal), find the PoUWNode (missing:
  condition NodeNotFound, retried slowly), POST /stake with the amount and role, write ticketId,
  lockedAmount and phase Pending, or Active when the node says the ticket is mined already. A
  refusal (a balance below the amount) fails the Stake with the node's reason.
- the poller (tasks.Poller, every settings.poll_interval_s) reads the pod's GET /economics for
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
from pouw_operator import runtime
from pouw_operator.conditions import Condition, condition
from pouw_operator.directory import NodeEndpoint, NoNode
from pouw_operator.kube import STAKE, KubeError
from pouw_operator.task_status import backoff, failure_of, generation_of, status_changes
from pouw_operator.tasks import (
    SLOW_RETRY_FACTOR,
    Poller,
    Tracked,
    directory,
    stage,
    stop_poller,
    tracked,
    write,
)

GROUP, VERSION = STAKE.api_version.split("/")
RESOURCE = (GROUP, VERSION, STAKE.plural)
KIND = STAKE.kind
POLLER = "stake_ticket_poller"
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


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def buy_ticket(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    uid: str,
    namespace: str | None,
    patch: kopf.Patch,
    retry: int,
    **_: Any,
) -> None:
    """Buy the ticket through the pod's API, unless status shows it bought (or refused)."""
    metrics = runtime.metrics()
    with metrics.observe(KIND):
        phase = status.get("phase")
        if status.get("ticketId") or phase == "Failed":
            metrics.set_phase(KIND, uid, str(phase or "Pending"))
            return
        generation = generation_of(meta)
        interval = runtime.settings().poll_interval_s

        def settle(phase: str, reason: str, message: str, signed: bool | None) -> None:
            said = condition(
                BOUGHT, "Unknown" if signed is None else signed, reason, message, generation
            )
            fields = {"phase": phase, "message": message}
            stage(patch, status_changes(status, generation, fields, [said]))
            metrics.set_phase(KIND, uid, phase)

        nodes = directory()
        node, replica = pod_of(spec)
        try:
            endpoint = await asyncio.to_thread(nodes.for_stake, namespace or "", node, replica)
            client = await asyncio.to_thread(nodes.client, namespace or "", endpoint)
            ticket = await asyncio.to_thread(_buy, client, spec, uid)
        except NoNode as error:
            settle("Pending", error.reason, error.message, False)
            delay = backoff(retry, SLOW_RETRY_FACTOR * interval)
            raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay) from None
        except KubeError as error:
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay) from None
        except ApiError as error:
            failure = failure_of(error)
            if failure.permanent:
                settle("Failed", failure.reason, failure.message, False)
                return
            settle("Pending", failure.reason, failure.message, None)
            delay = backoff(retry, interval)
            raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay) from None
        fields, conditions = bought(endpoint, ticket, generation)
        stage(patch, status_changes(status, generation, fields, conditions))
        metrics.set_phase(KIND, uid, fields["phase"])


@kopf.on.event(*RESOURCE)
def forget_stake(event: Mapping[str, Any], uid: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        runtime.metrics().forget(KIND, uid)


# -- following ------------------------------------------------------------------------------


@kopf.index(*RESOURCE)
def stake_index(
    namespace: str | None,
    name: str,
    uid: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[str, Tracked] | None:
    """The Stakes whose ticket is bought and not yet on chain: what the poller follows."""
    if not status.get("ticketId") or status.get("phase") != "Pending":
        return None
    return tracked(namespace, name, uid, meta, spec, status)


def _economics(url: str) -> dict[str, Any]:
    with NodeClient(url) as client:
        return client.economics()


async def confirm_ticket(item: Tracked) -> None:
    """Active once the pod's node lists the ticket among its live ones."""
    status, generation = item.status, item.generation
    node, replica = pod_of(item.spec)
    url = directory().for_pod(item.namespace, f"{node}-{replica}").url
    ticket_id = str(status["ticketId"])
    try:
        economics = await asyncio.to_thread(_economics, url)
    except ApiError as error:
        failure = failure_of(error)
        unknown = condition(CONFIRMED, "Unknown", failure.reason, failure.message, generation)
        await write(STAKE, item, status_changes(status, generation, {}, [unknown]))
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
    await write(STAKE, item, status_changes(status, generation, fields, [on_chain]))
    runtime.metrics().set_phase(KIND, item.uid, "Active")


@kopf.on.startup()
async def start_ticket_poller(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    index: kopf.Index[str, Tracked] = kwargs["stake_index"]  # kopf passes its indexes by name
    poller = Poller(STAKE, confirm_ticket)
    memo[POLLER] = asyncio.create_task(poller.run(index, logger), name=POLLER)


@kopf.on.cleanup()
async def stop_ticket_poller(memo: kopf.Memo, **_: Any) -> None:
    await stop_poller(memo, POLLER)
