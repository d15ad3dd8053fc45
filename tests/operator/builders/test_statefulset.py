"""The StatefulSet builder: a table of specs in, StatefulSets out, each checked against the
Kubernetes OpenAPI schema (kubernetes-validate, strict: an unknown field fails)."""

from __future__ import annotations

from typing import Any

import pytest

from pouw_operator.builders.naming import labels
from pouw_operator.builders.peers import Supervisor
from pouw_operator.builders.statefulset import (
    GPU_RESOURCE,
    build_statefulset,
    env_value,
    statefulset_owned_fields,
)
from pouw_operator.resources import NodeResource, PoUWNodeSpec
from pouw_operator.settings import OperatorSettings
from tests.operator.builders.manifests import (
    GPU_TOLERATION,
    NAMESPACE,
    SETTINGS,
    UID,
    container,
    env,
    node,
    valid,
)


@pytest.mark.parametrize(
    ("role", "upper", "stake"),
    [
        ("miner", "MINER", "100"),
        ("supervisor", "SUPERVISOR", "100"),
        ("verifier", "VERIFIER", "100"),
        ("evaluator", "EVALUATOR", "100"),
        ("peer", "PEER", "0"),  # a peer stakes nothing whatever the spec says
    ],
)
def test_each_role_is_upper_case_in_env_and_lower_case_in_labels(
    role: str, upper: str, stake: str
) -> None:
    pouw_node = NodeResource("n", NAMESPACE, UID, PoUWNodeSpec(role=role))
    statefulset = valid(build_statefulset(pouw_node, SETTINGS, []))
    assert env(statefulset)["POUW_ROLE"] == upper
    assert env(statefulset)["POUW_STAKE_AMOUNT"] == stake
    assert statefulset["metadata"]["labels"]["pouw.network/role"] == role
    assert statefulset["spec"]["template"]["metadata"]["labels"]["pouw.network/role"] == role


def test_a_devnet_node_derives_its_genesis_and_mounts_none() -> None:
    statefulset = valid(build_statefulset(node(chainId="pouw-devnet"), SETTINGS, []))
    assert env(statefulset)["POUW_CHAIN_ID"] == "pouw-devnet"
    assert "POUW_GENESIS_FILE" not in env(statefulset)
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert [volume["name"] for volume in volumes] == ["secrets", "tmp"]


def test_the_statefulset_of_a_default_spec() -> None:
    statefulset = valid(build_statefulset(node(), SETTINGS, []))
    spec = statefulset["spec"]
    assert statefulset["metadata"]["name"] == "miner"
    assert statefulset["metadata"]["namespace"] == NAMESPACE
    assert statefulset["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "pouw.network/v1alpha1",
            "kind": "PoUWNode",
            "name": "miner",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["serviceName"] == "miner"
    assert spec["replicas"] == 1
    assert spec["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "pouw-node",
            "app.kubernetes.io/instance": "miner",
        }
    }
    assert spec["template"]["metadata"]["labels"] == labels("miner", "miner")
    node_container = container(statefulset)
    assert node_container["image"] == "registry.example/pouw:1.0"
    assert node_container["command"] == ["pouw", "node"]
    assert env(statefulset) == {
        "POUW_NODE_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POUW_ROLE": "MINER",
        "POUW_HOST": "0.0.0.0",
        "POUW_PORT": "8000",
        "POUW_API_PORT": "8080",
        "POUW_DATA_DIR": "/data",
        "POUW_STAKE_AMOUNT": "100",
        "POUW_MINING_INTENSITY": "1",
        "POUW_CHAIN_ID": f"pouw-{NAMESPACE}",  # the namespace's private chain
        "POUW_GENESIS_FILE": "/etc/pouw/genesis/genesis.json",
        "POUW_ENABLE_SECURITY": "true",
        "POUW_BOOTSTRAP_PEERS": "",
        "POUW_DEVICE": "cpu",
        "POUW_API_TOKEN_FILE": "/var/run/pouw/secrets/api-token",
        "POUW_NETWORK_KEY_FILE": "/var/run/pouw/secrets/network-key",
    }
    assert node_container["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "secrets", "mountPath": "/var/run/pouw/secrets", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "genesis", "mountPath": "/etc/pouw/genesis", "readOnly": True},
    ]
    assert spec["template"]["spec"]["volumes"] == [
        {
            "name": "secrets",
            "projected": {
                "defaultMode": 0o440,
                "sources": [
                    {
                        "secret": {
                            "name": f"miner-api-token-{UID[:8]}",
                            "items": [{"key": "api-token", "path": "api-token"}],
                        }
                    },
                    {
                        "secret": {
                            "name": "pouw-network",
                            "items": [{"key": "network-key", "path": "network-key"}],
                        }
                    },
                ],
            },
        },
        {"name": "tmp", "emptyDir": {}},
        {"name": "genesis", "configMap": {"name": "pouw-genesis"}},
    ]
    assert node_container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert node_container["livenessProbe"]["httpGet"] == {"path": "/status", "port": 8080}
    assert node_container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert "tolerations" not in spec["template"]["spec"]
    assert "nodeSelector" not in spec["template"]["spec"]
    claim = spec["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }


def test_node_pods_run_as_the_images_user_on_a_read_only_root() -> None:
    statefulset = valid(build_statefulset(node(resources={"gpu": 1}), SETTINGS, []))
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,  # the Dockerfile's user pouw
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(statefulset)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Read-only root: every path the node writes is a volume (chain data, temporary files).
    mounts = {m["mountPath"]: m for m in container(statefulset)["volumeMounts"]}
    assert {"/data", "/tmp"} <= set(mounts)
    assert "readOnly" not in mounts["/data"] and "readOnly" not in mounts["/tmp"]
    # Secret files belong to root and the fsGroup: the group (the node) must read them.
    secrets = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert secrets["projected"]["defaultMode"] & 0o040
    assert not secrets["projected"]["defaultMode"] & 0o007


@pytest.mark.parametrize("service_account", [None, "pouw-node"])
def test_node_pods_mount_no_service_account_token(service_account: str | None) -> None:
    """A node never calls the Kubernetes API: a token in its pod would only serve whoever
    subverts it. The chart names a ServiceAccount bound to no Role; without one the pods run
    as the namespace's default, still without its token."""
    settings = OperatorSettings(node_service_account=service_account)
    pod = valid(build_statefulset(node(), settings, []))["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod.get("serviceAccountName") == service_account
    mounts = container(build_statefulset(node(), settings, []))["volumeMounts"]
    assert not [m for m in mounts if m["mountPath"].startswith("/var/run/secrets/kubernetes.io")]


def test_no_secret_reaches_a_node_pod_through_its_environment() -> None:
    """Environment variables are inherited by every child process and shown with the process
    (/proc/<pid>/environ): the token and the network key come as files, the signing key is
    made by the node in its own data volume (no other pod of the PoUWNode sees it)."""
    statefulset = valid(build_statefulset(node(replicas=3), SETTINGS, []))
    entries = container(statefulset)["env"]
    assert not [e for e in entries if "secretKeyRef" in e.get("valueFrom", {})]
    names = {e["name"] for e in entries}
    assert not names & {"POUW_API_TOKEN", "POUW_NETWORK_KEY", "POUW_NODE_KEY_FILE"}
    sources = statefulset["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    mounted = {s["secret"]["name"]: [i["key"] for i in s["secret"]["items"]] for s in sources}
    assert mounted == {f"miner-api-token-{UID[:8]}": ["api-token"], "pouw-network": ["network-key"]}


def test_security_contexts_are_fresh_per_manifest() -> None:
    first = build_statefulset(node(), SETTINGS, [])
    first["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    container(first)["securityContext"]["capabilities"]["drop"].clear()
    second = build_statefulset(node(), SETTINGS, [])
    assert second["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert container(second)["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_spec_values_reach_the_env_and_resources() -> None:
    statefulset = valid(
        build_statefulset(
            node(
                replicas=3,
                stake=250.5,
                miningIntensity=0.25,
                chainId="pouw-main",
                security=False,
                image="mine:2",
                resources={"cpu": "500m", "memory": "4Gi"},
            ),
            SETTINGS,
            [],
        )
    )
    values = env(statefulset)
    assert statefulset["spec"]["replicas"] == 3
    assert values["POUW_STAKE_AMOUNT"] == "250.5"
    assert values["POUW_MINING_INTENSITY"] == "0.25"
    assert values["POUW_CHAIN_ID"] == "pouw-main"
    assert values["POUW_ENABLE_SECURITY"] == "false"
    assert container(statefulset)["image"] == "mine:2"
    assert container(statefulset)["resources"]["requests"] == {"cpu": "500m", "memory": "4Gi"}


@pytest.mark.parametrize(
    ("gpu", "device", "limit", "tolerated"),
    [(0, "cpu", None, False), (2, "cuda", "2", True)],
)
def test_gpus_add_a_limit_a_toleration_and_the_cuda_device(
    gpu: int, device: str, limit: str | None, tolerated: bool
) -> None:
    own_toleration = {
        "key": "dedicated",
        "operator": "Equal",
        "value": "pouw",
        "effect": "NoSchedule",
    }
    statefulset = valid(
        build_statefulset(
            node(
                resources={"gpu": gpu},
                nodeSelector={"accelerator": "a100"},
                tolerations=[own_toleration],
            ),
            SETTINGS,
            [],
        )
    )
    pod = statefulset["spec"]["template"]["spec"]
    assert env(statefulset)["POUW_DEVICE"] == device
    assert container(statefulset)["resources"]["limits"].get(GPU_RESOURCE) == limit
    assert GPU_RESOURCE not in container(statefulset)["resources"]["requests"]
    assert pod["tolerations"] == [own_toleration, *([GPU_TOLERATION] if tolerated else [])]
    assert pod["nodeSelector"] == {"accelerator": "a100"}


def test_the_gpu_toleration_is_not_repeated_when_the_spec_has_it() -> None:
    statefulset = build_statefulset(
        node(resources={"gpu": 1}, tolerations=[GPU_TOLERATION]), SETTINGS, []
    )
    assert statefulset["spec"]["template"]["spec"]["tolerations"] == [GPU_TOLERATION]


@pytest.mark.parametrize(
    ("omega", "expected"),
    [
        (None, {}),
        ({"b": 0.002}, {"POUW_OMEGA_B": "0.002"}),
        ({"m": 1e-05}, {"POUW_OMEGA_M": "1e-05"}),
        ({"b": 1, "m": 0}, {"POUW_OMEGA_B": "1", "POUW_OMEGA_M": "0"}),
    ],
)
def test_omega_is_in_the_env_only_when_set(
    omega: dict[str, float] | None, expected: dict[str, str]
) -> None:
    spec: dict[str, Any] = {} if omega is None else {"omega": omega}
    values = env(valid(build_statefulset(node(**spec), SETTINGS, [])))
    assert {k: v for k, v in values.items() if k.startswith("POUW_OMEGA")} == expected


@pytest.mark.parametrize(
    ("storage", "claim_spec"),
    [
        (None, {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        (
            {"size": "20Gi", "storageClassName": "fast-ssd"},
            {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "20Gi"}},
                "storageClassName": "fast-ssd",
            },
        ),
    ],
)
def test_storage_size_and_class_shape_the_claim_template(
    storage: dict[str, str] | None, claim_spec: dict[str, Any]
) -> None:
    spec: dict[str, Any] = {} if storage is None else {"storage": storage}
    statefulset = valid(build_statefulset(node(**spec), SETTINGS, []))
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"] == claim_spec


def test_a_patch_leaves_the_immutable_fields_of_a_statefulset_alone() -> None:
    statefulset = build_statefulset(node(replicas=2), SETTINGS, [])
    owned = statefulset_owned_fields(statefulset)
    assert set(owned["spec"]) == {"replicas", "template"}
    assert owned["spec"]["template"] == statefulset["spec"]["template"]
    assert owned["metadata"]["ownerReferences"] == statefulset["metadata"]["ownerReferences"]


def test_the_statefulset_carries_the_bootstrap_peers() -> None:
    statefulset = build_statefulset(node(), SETTINGS, [Supervisor("sup", 2)])
    assert env_value(statefulset, "POUW_BOOTSTRAP_PEERS") == (
        "sup-0.sup.net.svc:8000,sup-1.sup.net.svc:8000"
    )
    assert env_value(statefulset, "POUW_NODE_ID") is None  # a reference, not a value
    assert env_value(None, "POUW_BOOTSTRAP_PEERS") is None
