"""Which node an MLTask or a Stake talks to, at which URL, with which API token.

Candidates are the PoUWNodes of the resource's namespace. The choice is a pure function over
their manifests; reading them and the `pouw-api-root` Secret is the injected `ClusterReader`'s
job (blocking: callers run the directory in a worker thread). Each node has its own token,
derived from that root: a client for one node holds that node's token only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from pouw.api.client import NodeClient
from pouw_operator.builders.naming import pod_api_url
from pouw_operator.builders.secrets import API_ROOT_SECRET, api_root, derive_api_token
from pouw_operator.errors import OperatorError
from pouw_operator.kube import POUWNODE, SECRET, Kube
from pouw_operator.resources import PoUWNodeBody
from pouw_operator.settings import OperatorSettings

ROLE_PREFERENCE = ("peer", "supervisor")
"""Roles that submit tasks best, first to last; any other role comes after them."""


class NoNode(OperatorError):
    """No node to talk to: `reason` (NoNode, NodeNotFound, ...) is the condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class NodeEndpoint:
    node: str
    """The PoUWNode's name."""
    pod: str
    """The pod whose API is called: <node>-<replica>."""
    role: str
    url: str


class ClusterReader(Protocol):
    """What the directory reads of the cluster (blocking calls)."""

    def list_nodes(self, namespace: str) -> list[PoUWNodeBody]:
        """The namespace's PoUWNode manifests."""
        ...

    def get_node(self, namespace: str, name: str) -> PoUWNodeBody | None:
        """One PoUWNode manifest, None when there is none of that name."""
        ...

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret's `data` (base64 values), None when there is no such Secret. The
        directory asks for `pouw-api-root` only."""
        ...


def labels_match(labels: Mapping[str, str] | None, match_labels: Mapping[str, str]) -> bool:
    found = labels or {}
    return all(found.get(key) == value for key, value in match_labels.items())


def _role(node: PoUWNodeBody) -> str:
    spec = node.get("spec")
    return str(spec.get("role", "") if spec else "").lower()


def _replicas(node: PoUWNodeBody) -> int:
    spec = node.get("spec")
    replicas = spec.get("replicas", 1) if spec else 1
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1


def _ready(node: PoUWNodeBody) -> bool:
    ready = (node.get("status") or {}).get("readyReplicas") or 0
    return isinstance(ready, int) and ready > 0


def _rank(node: PoUWNodeBody) -> tuple[int, int, str]:
    role = _role(node)
    preference = ROLE_PREFERENCE.index(role) if role in ROLE_PREFERENCE else len(ROLE_PREFERENCE)
    name = str((node.get("metadata") or {}).get("name", ""))
    return (preference, 0 if _ready(node) else 1, name)


def choose_node(
    nodes: Iterable[PoUWNodeBody], match_labels: Mapping[str, str] | None = None
) -> PoUWNodeBody | None:
    """The PoUWNode to submit through: among those with pods whose labels match, role peer,
    then supervisor, then any; a node with ready pods before one without; then by name."""
    candidates = [
        node
        for node in nodes
        if _replicas(node) > 0
        and not (node.get("metadata") or {}).get("deletionTimestamp")
        and labels_match((node.get("metadata") or {}).get("labels"), match_labels or {})
    ]
    return min(candidates, key=_rank, default=None)


def pod_url(namespace: str, pod: str, settings: OperatorSettings) -> str:
    return pod_api_url(settings, namespace, pod)


class NodeDirectory:
    def __init__(self, settings: OperatorSettings, cluster: ClusterReader) -> None:
        self.settings = settings
        self.cluster = cluster

    def _endpoint(self, namespace: str, node: PoUWNodeBody, replica: int) -> NodeEndpoint:
        name = str(node["metadata"]["name"])
        pod = f"{name}-{replica}"
        return NodeEndpoint(name, pod, _role(node), pod_url(namespace, pod, self.settings))

    def for_task(
        self, namespace: str, match_labels: Mapping[str, str] | None = None
    ) -> NodeEndpoint:
        """The node to submit an MLTask through (its first pod). Raises NoNode."""
        chosen = choose_node(self.cluster.list_nodes(namespace), match_labels)
        if chosen is None:
            wanted = (
                " with labels "
                + ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))
                if match_labels
                else ""
            )
            raise NoNode(
                "NoNode",
                f"no PoUWNode{wanted} with replicas in namespace {namespace}: "
                "create one (a peer is best) and the task is submitted through it",
            )
        return self._endpoint(namespace, chosen, 0)

    def for_pod(self, namespace: str, pod: str) -> NodeEndpoint:
        """The endpoint of a pod named in a status (submittedTo), without reading the cluster."""
        node = pod.rsplit("-", 1)[0]
        return NodeEndpoint(node, pod, "", pod_url(namespace, pod, self.settings))

    def for_stake(self, namespace: str, name: str, replica: int) -> NodeEndpoint:
        """Pod <name>-<replica> of PoUWNode `name`. Raises NoNode (NodeNotFound) when the
        PoUWNode is missing or has no such replica."""
        node = self.cluster.get_node(namespace, name)
        if node is None:
            raise NoNode("NodeNotFound", f"no PoUWNode {name} in namespace {namespace}")
        if replica >= _replicas(node):
            raise NoNode(
                "NodeNotFound",
                f"PoUWNode {name} has {_replicas(node)} replicas: no pod {name}-{replica}",
            )
        return self._endpoint(namespace, node, replica)

    def token(self, namespace: str, node: str) -> str | None:
        """The API token of PoUWNode `node` for writes: the setting, else derived from the
        namespace's `pouw-api-root` (None before the operator has made it)."""
        if self.settings.api_token:
            return self.settings.api_token
        try:
            root = api_root({"data": self.cluster.secret_data(namespace, API_ROOT_SECRET)})
        except ValueError:  # not base64: the node refuses the call, the condition says so
            return None
        return derive_api_token(root, node) if root else None

    def client(self, namespace: str, endpoint: NodeEndpoint) -> NodeClient:
        return NodeClient(endpoint.url, self.token(namespace, endpoint.node))


class KubernetesReader:
    """ClusterReader through pouw_operator.kube (a KubeError when the API server fails)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def list_nodes(self, namespace: str) -> list[PoUWNodeBody]:
        return [cast(PoUWNodeBody, node) for node in self.kube.list(POUWNODE, namespace)]

    def get_node(self, namespace: str, name: str) -> PoUWNodeBody | None:
        return cast(PoUWNodeBody | None, self.kube.get(POUWNODE, namespace, name))

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        secret = self.kube.get(SECRET, namespace, name)
        if secret is None:
            return None
        data = secret.get("data") or {}
        return {str(key): str(value) for key, value in data.items()}
