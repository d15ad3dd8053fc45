"""The headless Service of a PoUWNode: one DNS name per pod, for peers and for the operator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pouw_operator.builders.naming import child_metadata, selector_labels
from pouw_operator.resources import Manifest, NodeResource
from pouw_operator.settings import API_PORT, P2P_PORT


def build_service(node: NodeResource) -> Manifest:
    """Headless: each pod gets a DNS name <N>-<i>.<N>.<ns>.svc, before it is ready too (a
    node must be reachable by its peers to become healthy)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(node, node.name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(node.name),
            "ports": [
                {"name": "p2p", "port": P2P_PORT, "targetPort": P2P_PORT, "protocol": "TCP"},
                {"name": "api", "port": API_PORT, "targetPort": API_PORT, "protocol": "TCP"},
            ],
        },
    }


def service_owned_fields(service: Mapping[str, Any]) -> Manifest:
    """clusterIP is immutable; the rest is ours."""
    spec = service["spec"]
    return {
        "metadata": {
            "labels": service["metadata"]["labels"],
            "ownerReferences": service["metadata"]["ownerReferences"],
        },
        "spec": {
            "selector": spec["selector"],
            "ports": spec["ports"],
            "publishNotReadyAddresses": spec["publishNotReadyAddresses"],
        },
    }
