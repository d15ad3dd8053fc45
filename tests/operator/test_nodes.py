"""PoUWNode handlers: the real operator (kopf) against the in-memory API server, plus the
pure status mapping. No controller runs in the emulator, so a StatefulSet's status is what a
test patches into it, and the node API is a small HTTP server of the test's own."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import kopf
import msgspec
import pytest

from pouw.blockchain.params import ChainParams
from pouw.crypto import KeyPair
from pouw_operator.builders.naming import api_token_secret_name, label_selector
from pouw_operator.builders.secrets import api_root, derive_api_token
from pouw_operator.handlers.pouwnode import retry_or_fail
from pouw_operator.kube import KubeError, holds
from pouw_operator.node_status import NodeProbe, node_status, probe_node
from pouw_operator.resources import NodeResource, PoUWNodeSpec
from tests.operator.harness import OperatorCluster, unused_local_url

PEERS = "POUW_BOOTSTRAP_PEERS"
KINDS_OWNED = ("statefulsets", "services", "secrets")


def pouwnode(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"role": "miner", **spec}}


def env(statefulset: dict[str, Any]) -> dict[str, Any]:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def ready_condition(body: dict[str, Any] | None) -> dict[str, Any] | None:
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == "Ready":
            return dict(item)
    return None


def has_reason(reason: str) -> Any:
    return lambda body: (ready_condition(body) or {}).get("reason") == reason


def env_is(name: str, value: str) -> Any:
    return lambda statefulset: env(statefulset).get(name) == value


# --- children ---------------------------------------------------------------------------


def test_a_new_node_gets_its_secrets_service_and_statefulset(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    node = cluster.create(
        "pouwnodes", pouwnode("miner", replicas=2, stake=50, chainId="pouw-devnet")
    )
    uid = node["metadata"]["uid"]

    statefulset = cluster.wait_for_object("statefulsets", "miner")
    service = cluster.get("services", "miner")
    token = cluster.get("secrets", api_token_secret_name("miner", uid))
    network = cluster.get("secrets", "pouw-network")
    root = api_root(cluster.get("secrets", "pouw-api-root"))
    assert service is not None and token is not None and network is not None and root

    for child in (statefulset, service, token):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("PoUWNode", "miner", uid)
        assert owner["controller"] is True
    assert "ownerReferences" not in network["metadata"]
    assert set(network["data"]) == {"network-key"}
    assert base64.b64decode(token["data"]["api-token"]).decode() == derive_api_token(root, "miner")

    assert statefulset["spec"]["replicas"] == 2
    values = env(statefulset)
    assert values["POUW_ROLE"] == "MINER"
    assert values["POUW_STAKE_AMOUNT"] == "50"
    assert values["POUW_CHAIN_ID"] == "pouw-devnet"
    assert values[PEERS] == ""
    assert values["POUW_API_TOKEN_FILE"] == "/var/run/pouw/secrets/api-token"
    assert statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The node derives the key the devnet genesis funds from its pod's name itself.
    assert values["POUW_NODE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "POUW_NODE_KEY_FILE" not in values
    assert service["spec"]["clusterIP"] == "None"

    done = cluster.wait_for_object(
        "pouwnodes", "miner", lambda body: body.get("status", {}).get("observedGeneration") == 1
    )
    assert done["status"]["selector"] == label_selector("miner")
    assert not done["metadata"].get("finalizers"), "children are garbage-collected, not finalized"


def test_a_devnet_node_gets_no_private_chain(operator_cluster: OperatorCluster) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miner", chainId="pouw-devnet"))
    statefulset = cluster.wait_for_object("statefulsets", "miner")
    assert "POUW_GENESIS_FILE" not in env(statefulset)
    assert cluster.get("secrets", "pouw-faucet") is None
    assert cluster.get("configmaps", "pouw-genesis") is None


def test_a_private_chain_gets_its_faucet_and_genesis_once_and_pods_mount_it(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miner"))  # no chainId: the namespace's private chain
    statefulset = cluster.wait_for_object("statefulsets", "miner")
    chain_id = f"pouw-{cluster.namespace}"
    faucet = cluster.get("secrets", "pouw-faucet")
    genesis = cluster.get("configmaps", "pouw-genesis")
    assert faucet is not None and genesis is not None
    faucet_address = KeyPair.from_seed(base64.b64decode(faucet["data"]["seed"])).address
    params = msgspec.json.decode(genesis["data"]["genesis.json"], type=ChainParams)
    assert params.chain_id == chain_id
    assert [allocation.recipient for allocation in params.allocations] == [faucet_address]

    values = env(statefulset)
    assert values["POUW_CHAIN_ID"] == chain_id
    assert values["POUW_GENESIS_FILE"] == "/etc/pouw/genesis/genesis.json"
    pod = statefulset["spec"]["template"]["spec"]
    assert {"name": "genesis", "configMap": {"name": "pouw-genesis"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert {"name": "genesis", "mountPath": "/etc/pouw/genesis", "readOnly": True} in container[
        "volumeMounts"
    ]

    cluster.create("pouwnodes", pouwnode("verifier", role="verifier"))
    cluster.wait_for_object("statefulsets", "verifier")
    assert cluster.get("secrets", "pouw-faucet") == faucet  # made once, never overwritten
    assert cluster.get("configmaps", "pouw-genesis") == genesis


def test_each_node_gets_its_own_api_token(operator_cluster: OperatorCluster) -> None:
    cluster = operator_cluster
    tokens = []
    for name, role in (("miner", "miner"), ("verifier", "verifier")):
        uid = cluster.create("pouwnodes", pouwnode(name, role=role))["metadata"]["uid"]
        secret = cluster.wait_for_object("secrets", api_token_secret_name(name, uid))
        tokens.append(base64.b64decode(secret["data"]["api-token"]))
    assert tokens[0] != tokens[1] and all(len(token) == 64 for token in tokens)


def test_the_network_secret_is_made_once_and_never_overwritten(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    mine = {"api-token": base64.b64encode(b"mine").decode(), "network-key": "a2V5"}
    cluster.create("secrets", {"metadata": {"name": "pouw-network"}, "data": mine})
    cluster.create("pouwnodes", pouwnode("miner"))
    cluster.create("pouwnodes", pouwnode("verifier", role="verifier"))
    cluster.wait_for_object("statefulsets", "miner")
    cluster.wait_for_object("statefulsets", "verifier")
    network = cluster.get("secrets", "pouw-network")
    assert network is not None and network["data"] == mine


def test_a_spec_change_reaches_the_statefulset(operator_cluster: OperatorCluster) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miner", omega={"b": 0.002}))
    cluster.wait_for_object("statefulsets", "miner", env_is("POUW_MINING_INTENSITY", "1"))

    cluster.patch("pouwnodes", "miner", {"spec": {"miningIntensity": 0.5, "omega": None}})

    statefulset = cluster.wait_for_object(
        "statefulsets", "miner", env_is("POUW_MINING_INTENSITY", "0.5")
    )
    assert "POUW_OMEGA_B" not in env(statefulset)
    cluster.wait_for_object(
        "pouwnodes", "miner", lambda body: body.get("status", {}).get("observedGeneration") == 2
    )


def test_scaling_through_the_scale_subresource_reaches_the_statefulset(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    uid = cluster.create("pouwnodes", pouwnode("miner", replicas=1, chainId="pouw-main"))[
        "metadata"
    ]["uid"]
    token = cluster.wait_for_object("secrets", api_token_secret_name("miner", uid))

    cluster.patch("pouwnodes", "miner", {"spec": {"replicas": 3}}, subresource="scale")

    cluster.wait_for_object("statefulsets", "miner", lambda sts: sts["spec"]["replicas"] == 3)
    # Each new pod makes its own key in its own claim; the node's token serves all its pods.
    assert cluster.get("secrets", api_token_secret_name("miner", uid)) == token


def test_a_supervisor_created_later_becomes_everyones_bootstrap_peer(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    ns = cluster.namespace
    cluster.create("pouwnodes", pouwnode("miner"))
    cluster.wait_for_object("statefulsets", "miner", env_is(PEERS, ""))

    cluster.create("pouwnodes", pouwnode("supervisor", role="supervisor", replicas=2))
    both = f"supervisor-0.supervisor.{ns}.svc:8000,supervisor-1.supervisor.{ns}.svc:8000"
    cluster.wait_for_object("statefulsets", "miner", env_is(PEERS, both))
    supervisor = cluster.wait_for_object("statefulsets", "supervisor")
    assert env(supervisor)[PEERS] == "", "a supervisor does not dial itself"

    cluster.create("pouwnodes", pouwnode("backup", role="supervisor"))
    cluster.wait_for_object(
        "statefulsets", "supervisor", env_is(PEERS, f"backup-0.backup.{ns}.svc:8000")
    )
    cluster.wait_for_object(
        "statefulsets", "miner", env_is(PEERS, f"backup-0.backup.{ns}.svc:8000,{both}")
    )

    cluster.patch("pouwnodes", "supervisor", {"spec": {"replicas": 1}})
    one = f"supervisor-0.supervisor.{ns}.svc:8000"
    cluster.wait_for_object(
        "statefulsets", "miner", env_is(PEERS, f"backup-0.backup.{ns}.svc:8000,{one}")
    )
    cluster.wait_for_object("statefulsets", "backup", env_is(PEERS, one))

    cluster.delete("pouwnodes", "backup")
    cluster.wait_for_object("statefulsets", "miner", env_is(PEERS, one))
    cluster.wait_for_object("statefulsets", "supervisor", env_is(PEERS, ""))


def test_a_gpu_node_gets_the_gpu_limit_toleration_and_node_selector(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    cluster.create(
        "pouwnodes",
        pouwnode("trainer", resources={"gpu": 1}, nodeSelector={"gpu": "a100"}),
    )
    statefulset = cluster.wait_for_object("statefulsets", "trainer")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert env(statefulset)["POUW_DEVICE"] == "cuda"


def test_a_spec_that_cannot_be_built_is_reported_not_retried_forever(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("odd", role="wizard"))
    body = cluster.wait_for_object("pouwnodes", "odd", has_reason("InvalidSpec"))
    assert "unknown role" in (ready_condition(body) or {})["message"]
    assert cluster.get("statefulsets", "odd") is None
    assert cluster.operator_running


# --- status -----------------------------------------------------------------------------


def test_status_says_node_unreachable_when_no_node_api_answers(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miner", replicas=2))
    body = cluster.wait_for_object("pouwnodes", "miner", has_reason("NodeUnreachable"))
    condition = ready_condition(body)
    assert condition is not None
    assert condition["status"] == "False"
    assert condition["message"].startswith(cluster.settings.node_url or "")
    assert body["status"]["replicas"] == 0
    assert body["status"]["selector"] == label_selector("miner")

    # What the StatefulSet controller would write shows up in status.
    cluster.patch(
        "statefulsets", "miner", {"status": {"replicas": 2, "readyReplicas": 1}}, "status"
    )
    body = cluster.wait_for_object(
        "pouwnodes", "miner", lambda b: b["status"].get("readyReplicas") == 1
    )
    assert body["status"]["replicas"] == 2
    gauge = cluster.metrics.resources.labels("PoUWNode", "NodeUnreachable")
    cluster.wait_for(lambda: gauge._value.get() == 1, message="the phase counted")


class FakeNodeApi:
    """GET /status of a node at some height with some peers, on a free local port."""

    def __init__(self, height: int, peers: int) -> None:
        answer = json.dumps({"blockchain_height": height, "peer_count": peers}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = (200, answer) if self.path == "/status" else (404, b"{}")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def node_api() -> Iterator[FakeNodeApi]:
    api = FakeNodeApi(height=42, peers=3)
    yield api
    api.close()


def test_status_mirrors_the_node_api_and_the_statefulset(
    operator_cluster: OperatorCluster, node_api: FakeNodeApi
) -> None:
    cluster = operator_cluster
    cluster.restart_operator(node_url=node_api.url)
    cluster.create("pouwnodes", pouwnode("miner"))
    cluster.wait_for_object("pouwnodes", "miner", has_reason("PodsNotReady"))

    cluster.patch(
        "statefulsets", "miner", {"status": {"replicas": 1, "readyReplicas": 1}}, "status"
    )

    body = cluster.wait_for_object("pouwnodes", "miner", has_reason("NodeRunning"))
    assert body["status"]["height"] == 42
    assert body["status"]["peers"] == 3
    assert body["status"]["readyReplicas"] == 1
    condition = ready_condition(body)
    assert condition is not None and condition["status"] == "True"
    assert condition["observedGeneration"] == 1
    ready = cluster.metrics.resources.labels("PoUWNode", "Ready")
    cluster.wait_for(lambda: ready._value.get() == 1, message="the Ready phase counted")

    cluster.patch("pouwnodes", "miner", {"spec": {"replicas": 0}}, "scale")
    cluster.wait_for_object("pouwnodes", "miner", has_reason("ScaledToZero"))


def test_changes_made_while_the_operator_was_down_are_applied_on_restart(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    cluster.create("pouwnodes", pouwnode("miner"))
    cluster.wait_for_object(
        "pouwnodes", "miner", lambda body: body.get("status", {}).get("observedGeneration") == 1
    )

    cluster.stop_operator()
    cluster.patch("pouwnodes", "miner", {"spec": {"stake": 7}})
    cluster.create("pouwnodes", pouwnode("supervisor", role="supervisor"))
    cluster.start_operator()

    sup = f"supervisor-0.supervisor.{cluster.namespace}.svc:8000"
    statefulset = cluster.wait_for_object("statefulsets", "miner", env_is(PEERS, sup))
    cluster.wait_for_object("statefulsets", "miner", env_is("POUW_STAKE_AMOUNT", "7"))
    assert statefulset["spec"]["replicas"] == 1


def test_deleting_a_node_leaves_no_children_and_no_polling_behind(
    operator_cluster: OperatorCluster,
) -> None:
    cluster = operator_cluster
    doomed_uid = cluster.create("pouwnodes", pouwnode("doomed"))["metadata"]["uid"]
    cluster.create("pouwnodes", pouwnode("survivor"))
    cluster.wait_for_object("pouwnodes", "doomed", has_reason("NodeUnreachable"))
    cluster.wait_for_object("pouwnodes", "survivor", has_reason("NodeUnreachable"))
    unreachable = cluster.metrics.resources.labels("PoUWNode", "NodeUnreachable")
    cluster.wait_for(lambda: unreachable._value.get() == 2, message="both counted")

    cluster.delete("pouwnodes", "doomed")

    # The emulator collects garbage by ownerReferences, as the API server would.
    for kind, name in (("statefulsets", "doomed"), ("services", "doomed")):
        cluster.wait_until_gone(kind, name)
    cluster.wait_until_gone("secrets", api_token_secret_name("doomed", doomed_uid))
    assert cluster.get("secrets", "pouw-network") is not None
    assert cluster.get("secrets", "pouw-api-root") is not None
    cluster.wait_for(lambda: unreachable._value.get() == 1, message="the deleted one forgotten")

    # The poller goes on for the survivor and leaves the deleted node alone.
    seen = len(cluster.server.requests())
    cluster.patch("statefulsets", "survivor", {"status": {"replicas": 1}}, "status")
    cluster.wait_for_object("pouwnodes", "survivor", lambda b: b["status"]["replicas"] == 1)
    later = [r for r in cluster.server.requests()[seen:] if r.name == "doomed"]
    assert later == []
    assert cluster.operator_running


# --- the pure parts ---------------------------------------------------------------------


def node_with(spec: dict[str, Any], status: dict[str, Any] | None = None) -> NodeResource:
    return NodeResource(
        "miner", "net", "uid", cast(PoUWNodeSpec, {"role": "miner", **spec}), 3, status or {}
    )


RUNNING = {"status": {"replicas": 2, "readyReplicas": 2}}


@pytest.mark.parametrize(
    ("spec", "statefulset", "probe", "ready", "reason"),
    [
        ({"role": "wizard"}, None, None, "False", "InvalidSpec"),
        ({}, None, None, "False", "StatefulSetMissing"),
        ({"replicas": 0}, {"status": {}}, None, "False", "ScaledToZero"),
        ({"replicas": 2}, RUNNING, NodeProbe("u", error="refused"), "False", "NodeUnreachable"),
        (
            {"replicas": 2},
            {"status": {"replicas": 2, "readyReplicas": 1}},
            NodeProbe("u", 5, 1),
            "False",
            "PodsNotReady",
        ),
        ({"replicas": 2}, RUNNING, NodeProbe("u", 5, 1), "True", "NodeRunning"),
    ],
)
def test_node_status_names_the_reason(
    spec: dict[str, Any],
    statefulset: dict[str, Any] | None,
    probe: NodeProbe | None,
    ready: str,
    reason: str,
) -> None:
    status, phase = node_status(node_with(spec), statefulset, probe)
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Ready", ready, reason)
    assert condition["observedGeneration"] == 3
    assert phase == ("Ready" if ready == "True" else reason)
    assert status["selector"] == label_selector("miner")


def test_node_status_keeps_the_transition_time_and_other_conditions() -> None:
    first, _ = node_status(node_with({}), None, None)
    other = {"type": "Custom", "status": "True", "reason": "X", "message": ""}
    again, _ = node_status(node_with({}, {"conditions": [other, *first["conditions"]]}), None, None)
    assert again["conditions"] == [other, *first["conditions"]]
    assert holds({"conditions": [other, *first["conditions"]], "extra": 1}, again) is False
    assert holds({**again, "extra": 1}, again) is True


def test_height_and_peers_come_only_from_an_answer() -> None:
    status, _ = node_status(node_with({}), RUNNING, NodeProbe("u", error="timeout"))
    assert "height" not in status and "peers" not in status
    status, _ = node_status(node_with({}), RUNNING, NodeProbe("u", 9, 4))
    assert (status["height"], status["peers"]) == (9, 4)


def test_an_unreachable_node_is_a_probe_error_not_an_exception() -> None:
    url = unused_local_url()
    probe = probe_node(url, None, timeout=1)
    assert probe.url == url
    assert probe.error and probe.height is None


@pytest.mark.parametrize(
    ("status", "temporary"),
    [(0, True), (409, True), (429, True), (503, True), (403, False), (422, False)],
)
def test_api_errors_retry_or_fail(status: int, temporary: bool) -> None:
    error = retry_or_fail(KubeError(status, "Reason", "message"), retry=10)
    expected = kopf.TemporaryError if temporary else kopf.PermanentError
    assert isinstance(error, expected)
    if isinstance(error, kopf.TemporaryError):
        assert error.delay == 30.0


@pytest.mark.parametrize(
    ("actual", "wanted", "result"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": [{"x": 1, "default": 0}]}, {"a": [{"x": 1}]}, True),  # server defaults
        ({"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}]}, False),  # an entry removed
        ({}, {"a": None}, False),
    ],
)
def test_holds_ignores_defaults_but_not_removals(
    actual: dict[str, Any], wanted: dict[str, Any], result: bool
) -> None:
    assert holds(actual, wanted) is result
