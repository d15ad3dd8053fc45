"""kopf handlers for PoUWNode (pouwnodes.pouw.network/v1alpha1).

- create / update / resume: read the spec, build the children (builders.py), apply them: the
  namespace's `pouw-network` Secret (created once, never overwritten), the keys Secret, the
  headless Service and the StatefulSet. A supervisor also rewires everyone's bootstrap peers.
- a DELETED event of a supervisor rewires the others. There is no finalizer: the children
  carry ownerReferences and the API server's garbage collector removes them.
- a status poller (every settings.poll_interval_s) mirrors the StatefulSet and pod 0's node
  API into status, and repairs bootstrap peers that drifted (a supervisor that appeared while
  a node's own handler ran). It is one task for the whole operator, started by kopf.on.startup,
  and not a kopf timer: kopf puts a finalizer on every object a timer or daemon serves.

Every PoUWNode the operator sees is in the kopf index `pouwnode_index` (namespace -> nodes),
which gives the supervisors of a namespace without listing them from the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from pouw.api.client import ApiError, NodeClient
from pouw.roles import NodeRole
from pouw_operator import kube, runtime
from pouw_operator.builders.naming import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    keys_secret_name,
    label_selector,
    node_api_url,
)
from pouw_operator.builders.peers import Supervisor, supervisors_of
from pouw_operator.builders.secrets import (
    build_keys_secret,
    build_network_secret,
    secret_owned_fields,
)
from pouw_operator.builders.service import build_service, service_owned_fields
from pouw_operator.builders.statefulset import (
    build_statefulset,
    env_value,
    statefulset_owned_fields,
)
from pouw_operator.conditions import condition, set_condition
from pouw_operator.kube import KubeError
from pouw_operator.resources import NodeResource

RESOURCE = (GROUP, VERSION, PLURAL)
PEERS_VARIABLE = "POUW_BOOTSTRAP_PEERS"
PROBE_TIMEOUT_S = 2.0
MAX_RETRY_DELAY_S = 30.0
POLLER = "pouwnode_status_poller"
INDEX = "pouwnode_index"
"""kopf passes an index to every handler as a keyword argument of this name."""

NodeIndex = kopf.Index[str, NodeResource]


@kopf.index(*RESOURCE, id=INDEX)
def pouwnode_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, NodeResource]:
    return {namespace or "": NodeResource.from_body(body)}


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def reconcile_pouwnode(
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    node = NodeResource.from_body(body)
    index = _index(kwargs)
    with runtime.metrics().observe(KIND):
        try:
            role = node.resolved.role
        except (TypeError, ValueError) as error:
            raise kopf.PermanentError(f"the spec cannot be built from: {error}") from None
        neighbours = [*_others(index, node.namespace, node.name), node]
        supervisors = supervisors_of(neighbours)
        try:
            await apply_children(node, supervisors)
            if role is NodeRole.SUPERVISOR:
                rewired = await rewire(neighbours, supervisors, skip=node.name)
                if rewired:
                    logger.info(f"Bootstrap peers rewired on {', '.join(rewired)}.")
        except KubeError as error:
            raise retry_or_fail(error, retry) from None
    patch.status["observedGeneration"] = node.generation
    patch.status["selector"] = label_selector(node.name)


def _is_deletion(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*RESOURCE, when=_is_deletion)
async def pouwnode_deleted(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    node = NodeResource.from_body(body)
    runtime.metrics().forget(KIND, node.uid)
    if str(node.spec.get("role", "")).lower() != NodeRole.SUPERVISOR.value.lower():
        return
    others = list(_others(_index(kwargs), node.namespace, node.name))
    try:
        rewired = await rewire(others, supervisors_of(others), skip=None)
    except KubeError as error:  # the status poller repairs the peers later
        logger.warning(f"Bootstrap peers not rewired after {node.name} went: {error}")
        return
    if rewired:
        logger.info(f"Bootstrap peers rewired on {', '.join(rewired)} after {node.name} went.")


async def apply_keys(node: NodeResource) -> None:
    """A new node's keys are created at once; an existing Secret keeps its keys and gains
    those of new ordinals (scale-up): keys are never rotated."""
    name = keys_secret_name(node.name)
    try:
        await kube.create(kube.SECRET, build_keys_secret(node, None))
        return
    except KubeError as error:
        if not error.conflict:
            raise
    existing = await kube.get(kube.SECRET, node.namespace, name)
    if existing is None:
        raise KubeError(409, "Conflict", f"Secret {name} came and went")
    keys = build_keys_secret(node, existing.get("data"))
    if not kube.holds(existing, secret_owned_fields(keys)):
        await kube.patch(kube.SECRET, node.namespace, name, secret_owned_fields(keys))


async def apply_children(node: NodeResource, supervisors: Sequence[Supervisor]) -> None:
    """In dependency order: a pod needs its key and the network Secret before it starts."""
    await kube.ensure(kube.SECRET, build_network_secret(node.namespace))
    await apply_keys(node)
    service = build_service(node)
    await kube.create_or_patch(kube.SERVICE, service, service_owned_fields(service))
    statefulset = build_statefulset(node, runtime.settings(), supervisors)
    await kube.create_or_patch(kube.STATEFULSET, statefulset, statefulset_owned_fields(statefulset))


async def rewire(
    nodes: Iterable[NodeResource], supervisors: Sequence[Supervisor], skip: str | None
) -> list[str]:
    """Give each node's StatefulSet the bootstrap peers `supervisors` make; returns the names
    of those that changed. A node whose StatefulSet is not there yet gets them when it is."""
    rewired = []
    for node in nodes:
        if node.name != skip and await repair_peers(node, supervisors):
            rewired.append(node.name)
    return rewired


async def repair_peers(
    node: NodeResource,
    supervisors: Sequence[Supervisor],
    statefulset: Mapping[str, Any] | None = None,
) -> bool:
    try:
        desired = build_statefulset(node, runtime.settings(), supervisors)
    except (TypeError, ValueError):
        return False
    current = statefulset or await kube.get(kube.STATEFULSET, node.namespace, node.name)
    if current is None or env_value(current, PEERS_VARIABLE) == env_value(desired, PEERS_VARIABLE):
        return False
    await kube.patch(
        kube.STATEFULSET,
        node.namespace,
        node.name,
        {"spec": {"template": desired["spec"]["template"]}},
    )
    return True


def retry_or_fail(error: KubeError, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """Conflicts, throttling and an absent or failing API server are worth another try (with
    a growing delay); anything else (an invalid child, no permission) is not."""
    if error.retryable:
        return kopf.TemporaryError(str(error), delay=min(2.0**retry, MAX_RETRY_DELAY_S))
    return kopf.PermanentError(str(error))


# --- status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeProbe:
    """What pod 0's API said: its height and peer count, or why it said nothing."""

    url: str
    height: int | None = None
    peers: int | None = None
    error: str | None = None


def probe_node(url: str, token: str | None, timeout: float = PROBE_TIMEOUT_S) -> NodeProbe:
    """Blocking (httpx): run it in a thread."""
    try:
        with NodeClient(url, token, timeout=timeout) as client:
            answer = client.status()
    except ApiError as error:
        return NodeProbe(url=url, error=error.message or str(error))
    return NodeProbe(
        url=url,
        height=_integer(answer.get("blockchain_height")),
        peers=_integer(answer.get("peer_count")),
    )


def node_status(
    node: NodeResource, statefulset: Mapping[str, Any] | None, probe: NodeProbe | None
) -> tuple[dict[str, Any], str]:
    """status for the PoUWNode (replicas, readyReplicas, selector, height, peers, the Ready
    condition) and the phase the metrics count it under."""
    observed = (statefulset or {}).get("status") or {}
    ready = int(observed.get("readyReplicas") or 0)
    status: dict[str, Any] = {
        "replicas": int(observed.get("replicas") or 0),
        "readyReplicas": ready,
        "selector": label_selector(node.name),
    }
    if probe is not None and probe.error is None:
        if probe.height is not None:
            status["height"] = probe.height
        if probe.peers is not None:
            status["peers"] = probe.peers
    try:
        wanted = node.resolved.replicas
    except (TypeError, ValueError) as error:
        ok, reason, message = False, "InvalidSpec", str(error)
    else:
        if statefulset is None:
            ok, reason = False, "StatefulSetMissing"
            message = "no StatefulSet yet (the PoUWNode's events say why)"
        elif wanted == 0:
            ok, reason, message = False, "ScaledToZero", "spec.replicas is 0"
        elif probe is not None and probe.error is not None:
            ok, reason, message = False, "NodeUnreachable", f"{probe.url}: {probe.error}"
        elif ready < wanted:
            ok, reason, message = False, "PodsNotReady", f"{ready}/{wanted} pods ready"
        else:
            ok, reason = True, "NodeRunning"
            message = f"{ready}/{wanted} pods ready"
            if probe is not None:
                message += f"; height {probe.height}, {probe.peers} peers"
    status["conditions"] = set_condition(
        node.status.get("conditions"),
        condition("Ready", ok, reason, message, node.generation),
    )
    return status, "Ready" if ok else reason


async def refresh_status(node: NodeResource, neighbours: Sequence[NodeResource]) -> str | None:
    """Mirror the node's state into its status; returns its phase (None: it is gone)."""
    settings = runtime.settings()
    statefulset = await kube.get(kube.STATEFULSET, node.namespace, node.name)
    probe = None
    try:
        replicas = node.resolved.replicas
    except (TypeError, ValueError):
        replicas = 0
    if statefulset is not None:
        await repair_peers(node, supervisors_of(neighbours), statefulset)
        if replicas > 0:
            url = node_api_url(settings, node.namespace, node.name)
            probe = await asyncio.to_thread(probe_node, url, settings.api_token)
    status, phase = node_status(node, statefulset, probe)
    if not kube.holds(node.status, status):
        try:
            await kube.patch(kube.POUWNODE, node.namespace, node.name, {"status": status}, "status")
        except KubeError as error:
            if error.not_found:
                return None
            raise
    return phase


async def poll_status(index: NodeIndex, logger: kopf.Logger) -> None:
    """Forever: refresh every known PoUWNode's status, then wait one poll interval."""
    while True:
        namespaces = {namespace: list(nodes) for namespace, nodes in index.items()}
        await asyncio.gather(
            *(
                _refresh_logged(node, nodes, index, logger)
                for nodes in namespaces.values()
                for node in nodes
            )
        )
        await asyncio.sleep(runtime.settings().poll_interval_s)


async def _refresh_logged(
    node: NodeResource, neighbours: Sequence[NodeResource], index: NodeIndex, logger: kopf.Logger
) -> None:
    metrics = runtime.metrics()
    try:
        with metrics.observe(KIND):
            try:
                phase = await refresh_status(node, neighbours)
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


@kopf.on.startup()
async def start_status_poller(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    memo[POLLER] = asyncio.create_task(poll_status(_index(kwargs), logger), name=POLLER)


@kopf.on.cleanup()
async def stop_status_poller(memo: kopf.Memo, **_: Any) -> None:
    await runtime.stop_background(memo, POLLER)


def _index(kwargs: Mapping[str, Any]) -> NodeIndex:
    index: NodeIndex = kwargs[INDEX]
    return index


def _others(index: NodeIndex, namespace: str, name: str) -> Iterable[NodeResource]:
    return (node for node in index.get(namespace, []) if node.name != name)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
