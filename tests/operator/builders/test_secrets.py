"""The Secret builders: the namespace's network key and API token root (owned by nobody), and a
PoUWNode's own API token derived from that root, checked against the Kubernetes OpenAPI
schema."""

from __future__ import annotations

from pouw_operator.builders.secrets import (
    API_ROOT_SECRET,
    NETWORK_SECRET,
    api_root,
    build_api_root_secret,
    build_api_token_secret,
    build_network_secret,
    derive_api_token,
)
from tests.operator.builders.manifests import (
    NAMESPACE,
    UID,
    counting_entropy,
    decoded,
    node,
    valid,
)


def test_the_network_secret_holds_the_network_key_only_and_is_owned_by_nobody() -> None:
    secret = valid(build_network_secret(NAMESPACE, entropy=counting_entropy()))
    assert secret["metadata"]["name"] == NETWORK_SECRET
    assert "ownerReferences" not in secret["metadata"]
    assert set(secret["data"]) == {"network-key"}  # no API token shared by every node
    assert decoded(secret, "network-key") == (b"\x01" * 32).hex().encode()


def test_the_api_root_is_random_and_owned_by_nobody() -> None:
    secret = valid(build_api_root_secret(NAMESPACE, entropy=counting_entropy()))
    assert secret["metadata"]["name"] == API_ROOT_SECRET
    assert "ownerReferences" not in secret["metadata"]
    assert api_root(secret) == b"\x01" * 32
    assert api_root(build_api_root_secret(NAMESPACE)) != api_root(build_api_root_secret(NAMESPACE))
    assert api_root(None) is None and api_root({"data": {}}) is None


def test_each_pouwnode_has_its_own_token_derived_from_the_root() -> None:
    root = b"\x05" * 32
    miners = valid(build_api_token_secret(node("miners"), root))
    client = valid(build_api_token_secret(node("client"), root))
    assert miners["metadata"]["name"] == f"miners-api-token-{UID[:8]}"
    assert miners["metadata"]["ownerReferences"][0]["uid"] == UID  # collected with its node
    assert set(miners["data"]) == {"api-token"}
    token = decoded(miners, "api-token").decode()
    assert token == derive_api_token(root, "miners")  # what the operator derives to call it
    assert token != decoded(client, "api-token").decode()
    assert token != derive_api_token(b"\x06" * 32, "miners")  # another namespace's root
    assert len(token) == 64
