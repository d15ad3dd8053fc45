"""A PoUWNode's status from what can be seen of it: its StatefulSet's replica counts and what
pod 0's node API says (height, peers), as status fields and the Ready condition, and the phase
the operator's metrics count it under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pouw.api.client import ApiError, NodeClient
from pouw_operator.builders.naming import label_selector
from pouw_operator.conditions import condition, set_condition
from pouw_operator.resources import NodeResource, PoUWNodeStatus

PROBE_TIMEOUT_S = 2.0


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
) -> tuple[PoUWNodeStatus, str]:
    """status for the PoUWNode (replicas, readyReplicas, selector, height, peers, the Ready
    condition) and the phase the metrics count it under."""
    observed = (statefulset or {}).get("status") or {}
    ready = int(observed.get("readyReplicas") or 0)
    status = PoUWNodeStatus(
        replicas=int(observed.get("replicas") or 0),
        readyReplicas=ready,
        selector=label_selector(node.name),
    )
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


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
