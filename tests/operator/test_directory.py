"""NodeDirectory: which PoUWNode pod an MLTask or a Stake talks to, its URL and token."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from pouw_operator.builders.secrets import derive_api_token
from pouw_operator.directory import (
    NodeDirectory,
    NodeEndpoint,
    NoNode,
    choose_node,
    labels_match,
    pod_url,
)
from pouw_operator.settings import OperatorSettings


def pouwnode(
    name: str,
    role: str,
    *,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
    ready: int = 0,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"role": role, "replicas": replicas},
        "status": {"readyReplicas": ready},
    }


class Cluster:
    def __init__(
        self, nodes: list[dict[str, Any]], secret: Mapping[str, str] | None = None
    ) -> None:
        self.nodes = nodes
        self.secret = secret
        self.secret_reads = 0

    def list_nodes(self, namespace: str) -> list[Mapping[str, Any]]:
        return list(self.nodes)

    def get_node(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return next((n for n in self.nodes if n["metadata"]["name"] == name), None)

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.secret_reads += 1
        return self.secret if name == "pouw-api-root" else None


@pytest.mark.parametrize(
    ("nodes", "selector", "chosen"),
    [
        ([], None, None),
        ([pouwnode("miners", "miner")], None, "miners"),
        ([pouwnode("miners", "miner"), pouwnode("sup", "supervisor")], None, "sup"),
        ([pouwnode("sup", "supervisor"), pouwnode("client", "peer")], None, "client"),
        ([pouwnode("b", "peer"), pouwnode("a", "peer")], None, "a"),
        ([pouwnode("a", "peer"), pouwnode("b", "peer", ready=1)], None, "b"),
        ([pouwnode("client", "peer", replicas=0), pouwnode("m", "miner")], None, "m"),
        ([pouwnode("client", "peer", deleting=True), pouwnode("m", "miner")], None, "m"),
        (
            [pouwnode("client", "peer"), pouwnode("m", "miner", labels={"team": "ml"})],
            {"team": "ml"},
            "m",
        ),
        ([pouwnode("client", "peer", labels={"team": "web"})], {"team": "ml"}, None),
        ([pouwnode("client", "PEER"), pouwnode("sup", "supervisor")], {}, "client"),
    ],
)
def test_the_chosen_node(
    nodes: list[dict[str, Any]], selector: dict[str, str] | None, chosen: str | None
) -> None:
    found = choose_node(nodes, selector)
    assert (None if found is None else found["metadata"]["name"]) == chosen


def test_labels_match_needs_every_label() -> None:
    assert labels_match({"a": "1", "b": "2"}, {"a": "1"})
    assert not labels_match({"a": "1"}, {"a": "1", "b": "2"})
    assert labels_match(None, {})


def test_pod_urls_are_in_cluster_unless_one_url_is_set() -> None:
    assert pod_url("ns", "client-0", OperatorSettings()) == "http://client-0.client.ns.svc:8080"
    assert pod_url("ns", "my-peers-12", OperatorSettings()) == (
        "http://my-peers-12.my-peers.ns.svc:8080"
    )
    fixed = OperatorSettings(node_url="http://127.0.0.1:9999")
    assert pod_url("ns", "client-0", fixed) == "http://127.0.0.1:9999"


def test_a_task_goes_to_the_first_pod_of_the_chosen_node() -> None:
    directory = NodeDirectory(
        OperatorSettings(), Cluster([pouwnode("sup", "supervisor"), pouwnode("c", "peer")])
    )
    assert directory.for_task("ns") == NodeEndpoint("c", "c-0", "peer", "http://c-0.c.ns.svc:8080")
    assert directory.for_pod("ns", "c-0").url == "http://c-0.c.ns.svc:8080"


def test_no_candidate_is_a_no_node_with_a_message() -> None:
    directory = NodeDirectory(OperatorSettings(), Cluster([pouwnode("c", "peer")]))
    with pytest.raises(NoNode) as missing:
        directory.for_task("ns", {"team": "ml"})
    assert missing.value.reason == "NoNode"
    assert "team=ml" in missing.value.message and "namespace ns" in missing.value.message


def test_a_stake_goes_to_the_named_pod() -> None:
    directory = NodeDirectory(
        OperatorSettings(), Cluster([pouwnode("miners", "miner", replicas=3)])
    )
    assert directory.for_stake("ns", "miners", 2).pod == "miners-2"
    assert directory.for_stake("ns", "miners", 2).role == "miner"
    for name, replica in (("nobody", 0), ("miners", 3)):
        with pytest.raises(NoNode) as missing:
            directory.for_stake("ns", name, replica)
        assert missing.value.reason == "NodeNotFound"


def test_the_token_comes_from_the_setting_else_is_the_called_nodes_own() -> None:
    root = b"\x09" * 32
    cluster = Cluster([], secret={"root": base64.b64encode(root).decode()})
    assert NodeDirectory(OperatorSettings(api_token="set"), cluster).token("ns", "a") == "set"
    assert cluster.secret_reads == 0
    directory = NodeDirectory(OperatorSettings(), cluster)
    assert directory.token("ns", "miners") == derive_api_token(root, "miners")
    assert directory.token("ns", "client") == derive_api_token(root, "client")
    assert directory.token("ns", "miners") != directory.token("ns", "client")
    assert NodeDirectory(OperatorSettings(), Cluster([])).token("ns", "a") is None
    assert NodeDirectory(OperatorSettings(), Cluster([], {"root": "!!"})).token("ns", "a") is None


def test_a_client_holds_the_token_of_the_node_it_calls_only() -> None:
    """A stake through miners-1 carries the miners' token: were it leaked, the client node's
    API (which pays for tasks) would still refuse it."""
    root = b"\x09" * 32
    cluster = Cluster([pouwnode("miners", "miner", replicas=2), pouwnode("client", "peer")])
    cluster.secret = {"root": base64.b64encode(root).decode()}
    directory = NodeDirectory(OperatorSettings(), cluster)
    with directory.client("ns", directory.for_stake("ns", "miners", 1)) as client:
        assert client._http.headers["Authorization"] == (
            f"Bearer {derive_api_token(root, 'miners')}"
        )
    with directory.client("ns", directory.for_pod("ns", "client-0")) as client:
        assert client._http.headers["Authorization"] == (
            f"Bearer {derive_api_token(root, 'client')}"
        )


def test_the_client_carries_url_and_token() -> None:
    directory = NodeDirectory(OperatorSettings(api_token="tok"), Cluster([pouwnode("c", "peer")]))
    with directory.client("ns", directory.for_task("ns")) as client:
        assert client.base_url == "http://c-0.c.ns.svc:8080"
        assert client._http.headers["Authorization"] == "Bearer tok"
