"""The Secrets of a PoUWNode: its keys Secret (one signing-key seed per replica, never rotated)
and the namespace's `pouw-network` Secret (the API token and the network key), which no
PoUWNode owns."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from typing import Any

from pouw_operator.builders.naming import (
    APP_NAME,
    MANAGED_BY_LABEL,
    MANAGER,
    NAME_LABEL,
    child_metadata,
    key_file,
    keys_secret_name,
    pod_name,
)
from pouw_operator.resources import DEVNET_PREFIX, Manifest, NodeResource

NETWORK_SECRET = "pouw-network"
API_TOKEN_KEY = "api-token"
NETWORK_KEY_KEY = "network-key"
KEY_BYTES = 32

Entropy = Callable[[int], bytes]


def build_keys_secret(
    node: NodeResource,
    existing: Mapping[str, str] | None = None,
    entropy: Entropy = os.urandom,
) -> Manifest:
    """One signing-key seed per replica. `existing` is the Secret's current data: its keys are
    kept as they are (never rotated, also those of ordinals scaled away) and only missing
    ordinals get a key: on a devnet chain the seed the genesis funds, else random bytes."""
    spec = node.resolved
    data = dict(existing or {})
    for ordinal in range(spec.replicas):
        file = key_file(node.name, ordinal)
        if file not in data:
            seed = (
                f"{DEVNET_PREFIX}:{pod_name(node.name, ordinal)}".encode()
                if spec.devnet
                else entropy(KEY_BYTES)
            )
            data[file] = _b64(seed)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(node, keys_secret_name(node.name)),
        "type": "Opaque",
        "data": data,
    }


def build_network_secret(namespace: str, entropy: Entropy = os.urandom) -> Manifest:
    """The namespace's shared secrets: the API token and the network key (CURVE). Owned by
    nobody: it outlives any one PoUWNode, and the operator never overwrites it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": NETWORK_SECRET,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER, NAME_LABEL: APP_NAME},
        },
        "type": "Opaque",
        "data": {
            API_TOKEN_KEY: _b64(entropy(KEY_BYTES).hex().encode()),
            NETWORK_KEY_KEY: _b64(entropy(KEY_BYTES).hex().encode()),
        },
    }


def secret_owned_fields(secret: Mapping[str, Any]) -> Manifest:
    return {
        "metadata": {
            "labels": secret["metadata"]["labels"],
            "ownerReferences": secret["metadata"]["ownerReferences"],
        },
        "data": secret["data"],
    }


def decoded_seed(secret: Mapping[str, Any], file: str) -> bytes:
    """A replica's key seed as the keys Secret holds it."""
    return base64.b64decode(secret["data"][file])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
