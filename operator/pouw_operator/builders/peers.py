"""Who dials whom: the supervisors of a namespace, whose pods are every node's bootstrap peers
(POUW_BOOTSTRAP_PEERS)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pouw_operator.builders.naming import pod_name
from pouw_operator.resources import NodeResource
from pouw_operator.settings import P2P_PORT


class Supervisor(NamedTuple):
    """A supervisor PoUWNode of the namespace: its pods are everyone's bootstrap peers."""

    name: str
    replicas: int


def supervisors_of(nodes: Iterable[NodeResource]) -> list[Supervisor]:
    found = []
    for node in nodes:
        if str(node.spec.get("role", "")).lower() != "supervisor":
            continue
        try:
            replicas = node.resolved.replicas
        except (TypeError, ValueError):
            continue
        found.append(Supervisor(node.name, replicas))
    return sorted(found)


def bootstrap_peers(supervisors: Iterable[Supervisor], namespace: str, self_name: str) -> str:
    """POUW_BOOTSTRAP_PEERS: every pod of every supervisor but `self_name`, in name order."""
    return ",".join(
        f"{pod_name(supervisor.name, i)}.{supervisor.name}.{namespace}.svc:{P2P_PORT}"
        for supervisor in sorted(set(supervisors))
        if supervisor.name != self_name
        for i in range(supervisor.replicas)
    )
