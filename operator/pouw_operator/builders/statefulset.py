"""The StatefulSet of a NodeResource: its pods (the node container, its environment, probes,
resources and security contexts, the secrets and scratch volumes) and their data claims.

Least privilege (docs/security.md, "Cluster least privilege"): no ServiceAccount token in the
pods (a node never calls the Kubernetes API), secrets as files, never in the environment, and
the signing key made by the node in its own data volume, seen by no other pod."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Required, TypedDict

from pouw.roles import NodeRole
from pouw_operator.builders.genesis import GENESIS_CONFIGMAP, GENESIS_DIR, GENESIS_FILE_KEY
from pouw_operator.builders.naming import (
    api_token_secret_name,
    child_metadata,
    labels,
    selector_labels,
)
from pouw_operator.builders.peers import Supervisor, bootstrap_peers
from pouw_operator.builders.secrets import API_TOKEN_KEY, NETWORK_KEY_KEY, NETWORK_SECRET
from pouw_operator.resources import Manifest, NodeResource
from pouw_operator.settings import API_PORT, P2P_PORT, OperatorSettings

DATA_DIR = "/data"
SECRETS_DIR = "/var/run/pouw/secrets"
API_TOKEN_FILE = f"{SECRETS_DIR}/api-token"
NETWORK_KEY_FILE = f"{SECRETS_DIR}/network-key"
TMP_DIR = "/tmp"
RUN_AS = 10001
"""The image's user and group `pouw` (Dockerfile): the pods run as them, never as root."""
SECRETS_MODE = 0o440
"""Secret files belong to root and to the pod's fsGroup: the group must be able to read them."""
GPU_RESOURCE = "nvidia.com/gpu"


class EnvVar(TypedDict, total=False):
    """A core/v1 EnvVar: a name and a literal value, or where the value comes from."""

    name: Required[str]
    value: str
    valueFrom: dict[str, dict[str, str]]


def node_env(node: NodeResource, supervisors: Iterable[Supervisor]) -> list[EnvVar]:
    spec = node.resolved
    env: list[EnvVar] = [
        {"name": "POUW_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POUW_ROLE", "value": spec.role.value},
        {"name": "POUW_HOST", "value": "0.0.0.0"},
        {"name": "POUW_PORT", "value": str(P2P_PORT)},
        {"name": "POUW_API_PORT", "value": str(API_PORT)},
        {"name": "POUW_DATA_DIR", "value": DATA_DIR},
        {
            "name": "POUW_STAKE_AMOUNT",
            "value": _number(0 if spec.role is NodeRole.PEER else spec.stake),
        },
        {"name": "POUW_MINING_INTENSITY", "value": _number(spec.mining_intensity)},
    ]
    if spec.omega_b is not None:
        env.append({"name": "POUW_OMEGA_B", "value": _number(spec.omega_b)})
    if spec.omega_m is not None:
        env.append({"name": "POUW_OMEGA_M", "value": _number(spec.omega_m)})
    env.append({"name": "POUW_CHAIN_ID", "value": spec.chain_id})
    if not spec.devnet:
        env.append({"name": "POUW_GENESIS_FILE", "value": f"{GENESIS_DIR}/{GENESIS_FILE_KEY}"})
    env += [
        {"name": "POUW_ENABLE_SECURITY", "value": "true" if spec.security else "false"},
        {
            "name": "POUW_BOOTSTRAP_PEERS",
            "value": bootstrap_peers(supervisors, node.namespace, node.name),
        },
        {"name": "POUW_DEVICE", "value": "cuda" if spec.gpu > 0 else "cpu"},
        {"name": "POUW_API_TOKEN_FILE", "value": API_TOKEN_FILE},
        {"name": "POUW_NETWORK_KEY_FILE", "value": NETWORK_KEY_FILE},
    ]
    return env


def pod_security_context() -> Manifest:
    """Node pods run as the image's user `pouw`, never as root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        # The data volume and the secrets' files get this group, so the node can use them.
        "fsGroup": RUN_AS,
        # Re-own a volume only when its root is not the group's yet: a big chain starts faster.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def build_statefulset(
    node: NodeResource,
    settings: OperatorSettings,
    supervisors: Iterable[Supervisor],
) -> Manifest:
    spec = node.resolved
    pod_labels = labels(node.name, spec.role)
    limits: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    tolerations = [dict(toleration) for toleration in spec.tolerations]
    if spec.gpu > 0:
        limits[GPU_RESOURCE] = str(spec.gpu)
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    container: Manifest = {
        "name": "node",
        "image": spec.image or settings.node_image,
        "command": ["pouw", "node"],
        "env": node_env(node, supervisors),
        "ports": [
            {"name": "p2p", "containerPort": P2P_PORT, "protocol": "TCP"},
            {"name": "api", "containerPort": API_PORT, "protocol": "TCP"},
        ],
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": API_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/status", "port": API_PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        "securityContext": container_security_context(),
    }
    volumes: list[Manifest] = [
        secrets_volume(node),
        # The root filesystem is read-only: /data (the claim) and this are all a node writes.
        {"name": "tmp", "emptyDir": {}},
    ]
    if not spec.devnet:  # a devnet's genesis every node derives from its chain id
        container["volumeMounts"].append(
            {"name": "genesis", "mountPath": GENESIS_DIR, "readOnly": True}
        )
        volumes.append({"name": "genesis", "configMap": {"name": GENESIS_CONFIGMAP}})
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.node_service_account:
        pod_spec["serviceAccountName"] = settings.node_service_account
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    claim_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class:
        claim_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(node, node.name),
        "spec": {
            "serviceName": node.name,
            "replicas": spec.replicas,
            # Nodes sync from each other, not from their ordinal predecessor: start them together.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(node.name)},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
            # The claim holds the pod's signing key (made by the node) with its chain data: a
            # deleted NodeResource loses both; a scale-down keeps them for the pod that comes
            # back at that ordinal.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": selector_labels(node.name)},
                    "spec": claim_spec,
                }
            ],
        },
    }


def statefulset_owned_fields(statefulset: Mapping[str, Any]) -> Manifest:
    """What a patch may change: a StatefulSet's selector, service name, pod management and
    claim templates are immutable once created."""
    return {
        "metadata": {
            "labels": statefulset["metadata"]["labels"],
            "ownerReferences": statefulset["metadata"]["ownerReferences"],
        },
        "spec": {
            "replicas": statefulset["spec"]["replicas"],
            "template": statefulset["spec"]["template"],
        },
    }


def env_value(statefulset: Mapping[str, Any] | None, name: str) -> str | None:
    """The literal value of one env variable of the node container, if set."""
    if not statefulset:
        return None
    containers = (
        statefulset.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    )
    for container in containers:
        for entry in container.get("env") or []:
            if entry.get("name") == name:
                value = entry.get("value")
                return value if isinstance(value, str) else None
    return None


def secrets_volume(node: NodeResource) -> Manifest:
    """The node's API token (its own Secret) and the namespace's network key, as two files."""
    token_secret = api_token_secret_name(node.name, node.uid)
    return {
        "name": "secrets",
        "projected": {
            "defaultMode": SECRETS_MODE,
            "sources": [
                _secret_file(token_secret, API_TOKEN_KEY, API_TOKEN_FILE),
                _secret_file(NETWORK_SECRET, NETWORK_KEY_KEY, NETWORK_KEY_FILE),
            ],
        },
    }


def _secret_file(secret: str, key: str, path: str) -> Manifest:
    return {"secret": {"name": secret, "items": [{"key": key, "path": path.rsplit("/", 1)[1]}]}}


def _number(value: float) -> str:
    """100.0 -> "100", 0.25 -> "0.25": what a person would type."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
