"""What names and ties a PoUWNode's children: their names, labels and selectors, the owner
reference that has them garbage-collected with it, and the address of each pod's API."""

from __future__ import annotations

from pouw.roles import NodeRole
from pouw_operator.resources import NodeResource, ObjectMeta, OwnerReference
from pouw_operator.settings import API_PORT, OperatorSettings

GROUP = "pouw.network"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PoUWNode"
PLURAL = "pouwnodes"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROLE_LABEL = "pouw.network/role"
APP_NAME = "pouw-node"
MANAGER = "pouw-operator"


def pod_name(name: str, ordinal: int) -> str:
    return f"{name}-{ordinal}"


def api_token_secret_name(name: str, uid: str) -> str:
    """The Secret of a PoUWNode's API token. Its uid in the name: a PoUWNode deleted and made
    again at once never finds the old one's Secret (which the garbage collector is about to
    remove, and which the operator may not patch to adopt)."""
    return f"{name}-api-token-{uid[:8]}"


def node_api_url(settings: OperatorSettings, namespace: str, name: str, ordinal: int = 0) -> str:
    """The API of pod <name>-<ordinal> through the headless Service, unless the settings name
    one URL for every node."""
    return pod_api_url(settings, namespace, pod_name(name, ordinal))


def pod_api_url(settings: OperatorSettings, namespace: str, pod: str) -> str:
    """The API of pod <N>-<i> (the StatefulSet's headless Service <N> names each pod), unless
    the settings name one URL for every node."""
    if settings.node_url:
        return settings.node_url
    node = pod.rsplit("-", 1)[0]
    return f"http://{pod}.{node}.{namespace}.svc:{API_PORT}"


def selector_labels(name: str) -> dict[str, str]:
    """What the StatefulSet and the Service select pods by (immutable, so no role in it)."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name}


def labels(name: str, role: NodeRole | str) -> dict[str, str]:
    return {
        **selector_labels(name),
        MANAGED_BY_LABEL: MANAGER,
        ROLE_LABEL: str(role).lower(),
    }


def label_selector(name: str) -> str:
    """status.selector, for the scale subresource (kubectl scale, autoscalers)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(name).items()))


def owner_reference(node: NodeResource) -> OwnerReference:
    """Makes the child garbage-collected with the PoUWNode (what kopf.adopt writes)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": node.name,
        "uid": node.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(node: NodeResource, name: str) -> ObjectMeta:
    """The metadata of a child the PoUWNode owns."""
    return {
        "name": name,
        "namespace": node.namespace,
        "labels": labels(node.name, node.resolved.role),
        "ownerReferences": [owner_reference(node)],
    }
