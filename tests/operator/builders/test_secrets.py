"""The Secret builders: a PoUWNode's keys (never rotated) and the namespace's network Secret,
checked against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import pytest

from pouw_operator.builders.secrets import (
    NETWORK_SECRET,
    build_keys_secret,
    build_network_secret,
    secret_owned_fields,
)
from tests.operator.builders.manifests import (
    NAMESPACE,
    UID,
    counting_entropy,
    decoded,
    node,
    valid,
)


@pytest.mark.parametrize(
    ("chain", "seeds"),
    [
        ({"chainId": "pouw-devnet"}, [b"pouw-devnet:miner-0", b"pouw-devnet:miner-1"]),
        ({"chainId": "pouw-main"}, [b"\x01" * 32, b"\x02" * 32]),
        ({}, [b"\x01" * 32, b"\x02" * 32]),
    ],
    ids=[
        "devnet-keys-are-the-seeds-the-genesis-funds",
        "keys-of-other-chains-are-random-32-bytes",
        "keys-of-the-default-private-chain-are-random-32-bytes",
    ],
)
def test_each_replica_gets_a_key(chain: dict[str, str], seeds: list[bytes]) -> None:
    secret = valid(build_keys_secret(node(replicas=2, **chain), entropy=counting_entropy()))
    assert secret["metadata"]["name"] == "miner-keys"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    assert set(secret["data"]) == {"miner-0.key", "miner-1.key"}
    assert decoded(secret, "miner-0.key") == seeds[0]
    assert decoded(secret, "miner-1.key") == seeds[1]


def test_scaling_up_adds_keys_and_never_changes_existing_ones() -> None:
    entropy = counting_entropy()
    first = build_keys_secret(node(replicas=1, chainId="pouw-main"), entropy=entropy)
    scaled = build_keys_secret(
        node(replicas=3, chainId="pouw-main"), existing=first["data"], entropy=entropy
    )
    assert scaled["data"]["miner-0.key"] == first["data"]["miner-0.key"]
    assert set(scaled["data"]) == {"miner-0.key", "miner-1.key", "miner-2.key"}
    assert len({scaled["data"][key] for key in scaled["data"]}) == 3
    down = build_keys_secret(node(replicas=1, chainId="pouw-main"), existing=scaled["data"])
    assert down["data"] == scaled["data"]  # kept for when it scales back up
    assert secret_owned_fields(scaled)["data"] == scaled["data"]


def test_the_network_secret_is_random_and_owned_by_nobody() -> None:
    secret = valid(build_network_secret(NAMESPACE, entropy=counting_entropy()))
    assert secret["metadata"]["name"] == NETWORK_SECRET
    assert "ownerReferences" not in secret["metadata"]
    token, key = decoded(secret, "api-token"), decoded(secret, "network-key")
    assert token == (b"\x01" * 32).hex().encode()
    assert key == (b"\x02" * 32).hex().encode()
    fresh = build_network_secret(NAMESPACE)
    assert fresh["data"]["api-token"] != fresh["data"]["network-key"]
