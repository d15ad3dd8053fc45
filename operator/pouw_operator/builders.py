"""Pure builders: a PoUWNode and the operator's settings in, Kubernetes manifests (dicts) out.

No I/O here: the handlers (nodes.py) read the cluster, call these and apply the result; the
tests render them without a cluster. Randomness (new keys) comes in as a parameter.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, Required, TypedDict, cast

from pouw.roles import NodeRole
from pouw_operator.settings import API_PORT, P2P_PORT, OperatorSettings

GROUP = "pouw.network"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PoUWNode"
PLURAL = "pouwnodes"

NETWORK_SECRET = "pouw-network"
API_TOKEN_KEY = "api-token"
NETWORK_KEY_KEY = "network-key"
DATA_DIR = "/data"
KEYS_DIR = "/var/run/pouw/keys"
TMP_DIR = "/tmp"
RUN_AS = 10001
"""The image's user and group `pouw` (Dockerfile): the pods run as them, never as root."""
KEYS_MODE = 0o440
"""Secret files belong to root and to the pod's fsGroup: the group must be able to read them."""
DEVNET_PREFIX = "pouw-devnet"
GPU_RESOURCE = "nvidia.com/gpu"
KEY_BYTES = 32

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROLE_LABEL = "pouw.network/role"
APP_NAME = "pouw-node"
MANAGER = "pouw-operator"

Manifest = dict[str, Any]
Entropy = Callable[[int], bytes]


class OmegaSpec(TypedDict, total=False):
    b: float
    m: float


class ResourcesSpec(TypedDict, total=False):
    cpu: str
    memory: str
    gpu: int


class StorageSpec(TypedDict, total=False):
    size: str
    storageClassName: str


class PoUWNodeSpec(TypedDict, total=False):
    """spec of a PoUWNode as the CRD describes it (the API server fills the defaults; the
    builders fill them again for objects that never met one)."""

    role: Required[str]
    replicas: int
    stake: float
    miningIntensity: float
    omega: OmegaSpec
    resources: ResourcesSpec
    storage: StorageSpec
    image: str
    chainId: str
    security: bool
    nodeSelector: dict[str, str]
    tolerations: list[dict[str, Any]]


@dataclass(frozen=True)
class PoUWNode:
    """The parts of a PoUWNode object the operator works from."""

    name: str
    namespace: str
    uid: str
    spec: PoUWNodeSpec
    generation: int = 0
    status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PoUWNode:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            uid=str(metadata.get("uid", "")),
            spec=cast(PoUWNodeSpec, copy.deepcopy(dict(spec)) if isinstance(spec, Mapping) else {}),
            generation=int(metadata.get("generation") or 0),
            status=dict(body.get("status") or {}),
        )

    @cached_property
    def resolved(self) -> NodeSpec:
        """The spec with its defaults; ValueError when it cannot be built from."""
        return NodeSpec.parse(self.spec)


@dataclass(frozen=True)
class NodeSpec:
    """A PoUWNode's spec with every default applied and the role parsed."""

    role: NodeRole
    replicas: int = 1
    stake: float = 100
    mining_intensity: float = 1
    omega_b: float | None = None
    omega_m: float | None = None
    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    storage_size: str = "1Gi"
    storage_class: str | None = None
    image: str | None = None
    chain_id: str = DEVNET_PREFIX
    security: bool = True
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def parse(cls, spec: PoUWNodeSpec) -> NodeSpec:
        """Raises ValueError naming the field when the spec cannot be built from."""
        role = NodeRole.parse(str(spec.get("role", "")))
        omega = spec.get("omega") or OmegaSpec()
        resources = spec.get("resources") or ResourcesSpec()
        storage = spec.get("storage") or StorageSpec()
        defaults = cls(role=role)
        parsed = cls(
            role=role,
            replicas=int(spec.get("replicas", defaults.replicas)),
            stake=float(spec.get("stake", defaults.stake)),
            mining_intensity=float(spec.get("miningIntensity", defaults.mining_intensity)),
            omega_b=_optional_float(omega.get("b")),
            omega_m=_optional_float(omega.get("m")),
            cpu=str(resources.get("cpu", defaults.cpu)),
            memory=str(resources.get("memory", defaults.memory)),
            gpu=int(resources.get("gpu", defaults.gpu)),
            storage_size=str(storage.get("size", defaults.storage_size)),
            storage_class=storage.get("storageClassName") or None,
            image=spec.get("image") or None,
            chain_id=str(spec.get("chainId") or defaults.chain_id),
            security=bool(spec.get("security", defaults.security)),
            node_selector=dict(spec.get("nodeSelector") or {}),
            tolerations=tuple(spec.get("tolerations") or ()),
        )
        for name in ("replicas", "gpu"):
            if getattr(parsed, name) < 0:
                raise ValueError(f"spec.{name} must be >= 0")
        if parsed.stake < 0 or not 0 <= parsed.mining_intensity <= 1:
            raise ValueError("spec.stake must be >= 0 and spec.miningIntensity in [0, 1]")
        return parsed

    @property
    def devnet(self) -> bool:
        return self.chain_id.startswith(DEVNET_PREFIX)


class Supervisor(NamedTuple):
    """A supervisor PoUWNode of the namespace: its pods are everyone's bootstrap peers."""

    name: str
    replicas: int


def supervisors_of(nodes: Iterable[PoUWNode]) -> list[Supervisor]:
    found = []
    for node in nodes:
        if str(node.spec.get("role", "")).lower() != "supervisor":
            continue
        try:
            replicas = node.resolved.replicas
        except (TypeError, ValueError):
            continue
        found.append(Supervisor(node.name, replicas))
    return sorted(found)


def bootstrap_peers(supervisors: Iterable[Supervisor], namespace: str, self_name: str) -> str:
    """POUW_BOOTSTRAP_PEERS: every pod of every supervisor but `self_name`, in name order."""
    return ",".join(
        f"{pod_name(supervisor.name, i)}.{supervisor.name}.{namespace}.svc:{P2P_PORT}"
        for supervisor in sorted(set(supervisors))
        if supervisor.name != self_name
        for i in range(supervisor.replicas)
    )


def pod_name(name: str, ordinal: int) -> str:
    return f"{name}-{ordinal}"


def node_api_url(settings: OperatorSettings, namespace: str, name: str, ordinal: int = 0) -> str:
    """The API of pod <name>-<ordinal> through the headless Service, unless the settings name
    one URL for every node."""
    if settings.node_url:
        return settings.node_url
    return f"http://{pod_name(name, ordinal)}.{name}.{namespace}.svc:{API_PORT}"


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


def owner_reference(node: PoUWNode) -> dict[str, Any]:
    """Makes the child garbage-collected with the PoUWNode (what kopf.adopt writes)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": node.name,
        "uid": node.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(node: PoUWNode, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": node.namespace,
        "labels": labels(node.name, node.resolved.role),
        "ownerReferences": [owner_reference(node)],
    }


def build_service(node: PoUWNode) -> Manifest:
    """Headless: each pod gets a DNS name <N>-<i>.<N>.<ns>.svc, before it is ready too (a
    node must be reachable by its peers to become healthy)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(node, node.name),
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


def keys_secret_name(name: str) -> str:
    return f"{name}-keys"


def key_file(name: str, ordinal: int) -> str:
    return f"{pod_name(name, ordinal)}.key"


def build_keys_secret(
    node: PoUWNode,
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
        "metadata": _metadata(node, keys_secret_name(node.name)),
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


def node_env(node: PoUWNode, supervisors: Iterable[Supervisor]) -> list[dict[str, Any]]:
    spec = node.resolved
    env: list[dict[str, Any]] = [
        {"name": "POUW_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POUW_ROLE", "value": spec.role.value},
        {"name": "POUW_HOST", "value": "0.0.0.0"},
        {"name": "POUW_PORT", "value": str(P2P_PORT)},
        {"name": "POUW_API_PORT", "value": str(API_PORT)},
        {"name": "POUW_DATA_DIR", "value": DATA_DIR},
        {"name": "POUW_NODE_KEY_FILE", "value": f"{KEYS_DIR}/$(POUW_NODE_ID).key"},
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
    env += [
        {"name": "POUW_CHAIN_ID", "value": spec.chain_id},
        {"name": "POUW_ENABLE_SECURITY", "value": "true" if spec.security else "false"},
        {
            "name": "POUW_BOOTSTRAP_PEERS",
            "value": bootstrap_peers(supervisors, node.namespace, node.name),
        },
        {"name": "POUW_DEVICE", "value": "cuda" if spec.gpu > 0 else "cpu"},
        _from_secret("POUW_API_TOKEN", API_TOKEN_KEY),
        _from_secret("POUW_NETWORK_KEY", NETWORK_KEY_KEY),
    ]
    return env


def pod_security_context() -> Manifest:
    """Node pods run as the image's user `pouw`, never as root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        # The data volume and the keys' files get this group, so the node can use them.
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
    node: PoUWNode,
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
    container: dict[str, Any] = {
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
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
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
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "keys",
                "secret": {"secretName": keys_secret_name(node.name), "defaultMode": KEYS_MODE},
            },
            # The root filesystem is read-only: /data (the claim) and this are all a node writes.
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage_size}},
    }
    if spec.storage_class:
        claim_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(node, node.name),
        "spec": {
            "serviceName": node.name,
            "replicas": spec.replicas,
            # Nodes sync from each other, not from their ordinal predecessor: start them together.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(node.name)},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
            # A deleted PoUWNode loses its keys (owned Secret), so its chain data goes too; a
            # scale-down keeps the data for the pod that comes back at that ordinal.
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


def secret_owned_fields(secret: Mapping[str, Any]) -> Manifest:
    return {
        "metadata": {
            "labels": secret["metadata"]["labels"],
            "ownerReferences": secret["metadata"]["ownerReferences"],
        },
        "data": secret["data"],
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


def _from_secret(variable: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": NETWORK_SECRET, "key": key}}}


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _number(value: float) -> str:
    """100.0 -> "100", 0.25 -> "0.25": what a person would type."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
