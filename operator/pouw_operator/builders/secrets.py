"""The Secrets the operator writes for a PoUWNode, none of which it reads back but the one it
derives the others from (docs/security.md, "Cluster least privilege"):

- `pouw-api-root` (one per namespace, owned by nobody): a random root the API tokens derive
  from. The operator reads it by its fixed name (RBAC `resourceNames`), the only Secret of
  the namespace it reads besides the faucet's.
- `<name>-api-token-<uid>` (one per PoUWNode, owned by it): that node's API token, derived from
  the root, mounted into its pods as a file. The operator derives it again to call the node.
- `pouw-network` (one per namespace, owned by nobody): the network key (CURVE) every node of
  the namespace shares, mounted as a file; the operator never needs it.

A pod's signing key is no Secret: the node makes it in its data volume on first start
(pouw.node.identity), so no key leaves the pod it signs for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping

from pouw_operator.builders.naming import (
    APP_NAME,
    MANAGED_BY_LABEL,
    MANAGER,
    NAME_LABEL,
    api_token_secret_name,
    child_metadata,
)
from pouw_operator.resources import Manifest, NodeResource

NETWORK_SECRET = "pouw-network"
NETWORK_KEY_KEY = "network-key"
API_ROOT_SECRET = "pouw-api-root"
API_ROOT_KEY = "root"
API_TOKEN_KEY = "api-token"
KEY_BYTES = 32
TOKEN_DOMAIN = b"pouw-api-token:"
"""Separates the token derivation from any other use of the root."""

Entropy = Callable[[int], bytes]


def _namespace_secret(name: str, namespace: str, data: Mapping[str, bytes]) -> Manifest:
    """A Secret of the namespace that outlives any one PoUWNode; never overwritten."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGER, NAME_LABEL: APP_NAME},
        },
        "type": "Opaque",
        "data": {key: _b64(value) for key, value in data.items()},
    }


def build_network_secret(namespace: str, entropy: Entropy = os.urandom) -> Manifest:
    """The network key (CURVE) of the namespace's nodes."""
    return _namespace_secret(
        NETWORK_SECRET, namespace, {NETWORK_KEY_KEY: entropy(KEY_BYTES).hex().encode()}
    )


def build_api_root_secret(namespace: str, entropy: Entropy = os.urandom) -> Manifest:
    """The root every API token of the namespace derives from."""
    return _namespace_secret(API_ROOT_SECRET, namespace, {API_ROOT_KEY: entropy(KEY_BYTES)})


def api_root(secret: Mapping[str, object] | None) -> bytes | None:
    """The root in a `pouw-api-root` Secret, None when there is none (not made yet)."""
    data = (secret or {}).get("data")
    encoded = data.get(API_ROOT_KEY) if isinstance(data, Mapping) else None
    return base64.b64decode(encoded) if isinstance(encoded, str) and encoded else None


def derive_api_token(root: bytes, node_name: str) -> str:
    """The API token of every pod of PoUWNode `node_name`: an HMAC of its name under the
    namespace's root, so knowing one node's token tells nothing of another's."""
    return hmac.new(root, TOKEN_DOMAIN + node_name.encode(), hashlib.sha256).hexdigest()


def build_api_token_secret(node: NodeResource, root: bytes) -> Manifest:
    """The node's API token, owned by the PoUWNode (garbage-collected with it)."""
    token = derive_api_token(root, node.name)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(node, api_token_secret_name(node.name, node.uid)),
        "type": "Opaque",
        "data": {API_TOKEN_KEY: _b64(token.encode())},
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
