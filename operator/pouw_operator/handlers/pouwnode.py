"""kopf handlers for PoUWNode (pouwnodes.pouw.network/v1alpha1).

- create / update / resume (`reconcile_pouwnode`): read the spec, build the children and apply
  them (children.py). A supervisor also rewires everyone's bootstrap peers.
- a DELETED event of a supervisor (`pouwnode_deleted`) rewires the others. There is no
  finalizer: the children carry ownerReferences and the API server's garbage collector removes
  them.
- a status poller (every settings.poll_interval_s) mirrors the StatefulSet and pod 0's node
  API into status (node_status.py), repairs bootstrap peers that drifted (a supervisor that
  appeared while a node's own handler ran), and off devnet gives each replica its coins
  from the namespace's faucet once its pod answers (faucet.py). Not a handler's retries: those
  would hold back the node's spec changes while a pod is not up. It is one task for the whole
  operator, started by kopf.on.startup, and not a kopf timer: kopf puts a finalizer on every
  object a timer or daemon serves.

Every PoUWNode the operator sees is in the kopf index `pouwnode_index` (namespace -> nodes),
which gives the supervisors of a namespace without listing them from the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import kopf

from pouw.api.client import ApiError
from pouw.roles import NodeRole
from pouw_operator.builders.naming import label_selector, node_api_url
from pouw_operator.builders.peers import supervisors_of
from pouw_operator.children import apply_children, repair_peers, rewire
from pouw_operator.faucet import fund_replicas, needs_funding
from pouw_operator.kube import POUWNODE, STATEFULSET, KubeError, holds
from pouw_operator.memo import OperatorMemo
from pouw_operator.node_status import node_status, probe_node
from pouw_operator.payments import node_directory
from pouw_operator.resources import NodeResource

RESOURCE = POUWNODE.resource
KIND = POUWNODE.kind
MAX_RETRY_DELAY_S = 30.0
POLLER = "pouwnode_status_poller"
"""The poller's background task in the memo."""
INDEX = "pouwnode_index"
"""kopf passes an index to every handler as a keyword argument of this name."""

NodeIndex = kopf.Index[str, NodeResource]


@kopf.index(*RESOURCE, id=INDEX)
def pouwnode_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, NodeResource]:
    return {namespace or "": NodeResource.from_body(body)}


# kopf records each resource's progress under the id, the function's name: keep it.
@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def reconcile_pouwnode(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: kopf.Logger,
    memo: OperatorMemo,
    **kwargs: Any,
) -> None:
    node = NodeResource.from_body(body)
    index = _index(kwargs)
    with memo.metrics.observe(KIND):
        try:
            role = node.resolved.role
        except (TypeError, ValueError) as error:
            raise kopf.PermanentError(f"the spec cannot be built from: {error}") from None
        neighbours = [*_others(index, node.namespace, node.name), node]
        supervisors = supervisors_of(neighbours)
        try:
            await apply_children(memo, node, supervisors)
            if role is NodeRole.SUPERVISOR:
                rewired = await rewire(memo, neighbours, supervisors, skip=node.name)
                if rewired:
                    logger.info(f"Bootstrap peers rewired on {', '.join(rewired)}.")
        except KubeError as error:
            raise retry_or_fail(error, retry) from None
    patch.status["observedGeneration"] = node.generation
    patch.status["selector"] = label_selector(node.name)


def _is_deletion(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*RESOURCE, when=_is_deletion)
async def pouwnode_deleted(
    body: kopf.Body, logger: kopf.Logger, memo: OperatorMemo, **kwargs: Any
) -> None:
    node = NodeResource.from_body(body)
    memo.metrics.forget(KIND, node.uid)
    if str(node.spec.get("role", "")).lower() != NodeRole.SUPERVISOR.value.lower():
        return
    others = list(_others(_index(kwargs), node.namespace, node.name))
    try:
        rewired = await rewire(memo, others, supervisors_of(others), skip=None)
    except KubeError as error:  # the status poller repairs the peers later
        logger.warning(f"Bootstrap peers not rewired after {node.name} went: {error}")
        return
    if rewired:
        logger.info(f"Bootstrap peers rewired on {', '.join(rewired)} after {node.name} went.")


def retry_or_fail(error: KubeError, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """Conflicts, throttling and an absent or failing API server are worth another try (with
    a growing delay); anything else (an invalid child, no permission) is not."""
    if error.retryable:
        return kopf.TemporaryError(str(error), delay=min(2.0**retry, MAX_RETRY_DELAY_S))
    return kopf.PermanentError(str(error))


# --- status -----------------------------------------------------------------------------


@kopf.on.startup()
async def start_status_poller(memo: OperatorMemo, logger: kopf.Logger, **kwargs: Any) -> None:
    memo.start_background(POLLER, poll_status(memo, _index(kwargs), logger))


@kopf.on.cleanup()
async def stop_status_poller(memo: OperatorMemo, **_: Any) -> None:
    await memo.stop_background(POLLER)


async def poll_status(memo: OperatorMemo, index: NodeIndex, logger: kopf.Logger) -> None:
    """Forever: refresh every known PoUWNode's status, then wait one poll interval."""
    while True:
        namespaces = {namespace: list(nodes) for namespace, nodes in index.items()}
        await asyncio.gather(
            *(
                _refresh_logged(memo, node, nodes, index, logger)
                for nodes in namespaces.values()
                for node in nodes
            )
        )
        await asyncio.sleep(memo.settings.poll_interval_s)


async def refresh_status(
    memo: OperatorMemo, node: NodeResource, neighbours: Sequence[NodeResource]
) -> str | None:
    """Mirror the node's state into its status; returns its phase (None: it is gone)."""
    settings, kube = memo.settings, memo.kube
    statefulset = await kube.get(STATEFULSET, node.namespace, node.name)
    probe = None
    try:
        replicas = node.resolved.replicas
    except (TypeError, ValueError):
        replicas = 0
    if statefulset is not None:
        await repair_peers(memo, node, supervisors_of(neighbours), statefulset)
        if replicas > 0:
            url = node_api_url(settings, node.namespace, node.name)
            probe = await asyncio.to_thread(probe_node, url, settings.api_token)
    status, phase = node_status(node, statefulset, probe)
    if not holds(node.status, status):
        try:
            await kube.patch(POUWNODE, node.namespace, node.name, {"status": status}, "status")
        except KubeError as error:
            if error.not_found:
                return None
            raise
    return phase


async def _refresh_logged(
    memo: OperatorMemo,
    node: NodeResource,
    neighbours: Sequence[NodeResource],
    index: NodeIndex,
    logger: kopf.Logger,
) -> None:
    metrics = memo.metrics
    try:
        with metrics.observe(KIND):
            try:
                phase = await refresh_status(memo, node, neighbours)
            except KubeError as error:
                raise retry_or_fail(error, 0) from None
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        logger.warning(f"PoUWNode {node.namespace}/{node.name}: status not refreshed: {error}")
        return
    except Exception:
        logger.exception(f"PoUWNode {node.namespace}/{node.name}: status not refreshed")
        return
    if phase is not None and any(n.uid == node.uid for n in index.get(node.namespace, [])):
        metrics.set_phase(KIND, node.uid, phase)
    if phase is not None:
        await _fund_logged(memo, node, logger)


async def _fund_logged(memo: OperatorMemo, node: NodeResource, logger: kopf.Logger) -> None:
    try:
        if not needs_funding(node):
            return
        funded = await fund_replicas(memo, node, node_directory(memo))
    except (TypeError, ValueError):
        return  # reconcile_pouwnode fails the spec
    except ApiError as error:  # a pod not up yet, most often: the next round tries again
        logger.debug(f"PoUWNode {node.namespace}/{node.name}: no faucet transfer yet: {error}")
        return
    except KubeError as error:
        logger.warning(f"PoUWNode {node.namespace}/{node.name}: no faucet transfer: {error}")
        return
    if funded:
        pods = ", ".join(f"{node.name}-{ordinal}" for ordinal in funded)
        logger.info(f"Faucet funded {pods} for a stake of {node.resolved.stake} each.")


def _index(kwargs: Mapping[str, Any]) -> NodeIndex:
    index: NodeIndex = kwargs[INDEX]
    return index


def _others(index: NodeIndex, namespace: str, name: str) -> Iterable[NodeResource]:
    return (node for node in index.get(namespace, []) if node.name != name)
