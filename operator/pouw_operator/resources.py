"""The operator's custom resources as types: the spec and status of PoUWNode, MLTask and Stake
(crds/*.yaml) as TypedDicts, the metadata and bodies around them, and `NodeResource`, the parts
of a PoUWNode the operator works from, with `NodeSpec`, its spec with every default applied.

A misspelled field is a type error here. kopf hands handlers read-only views of a body; the API
server has checked them against the CRD's schema, which these types describe, so a handler
casts them once, where it receives them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Required, TypedDict, cast

from pouw.roles import NodeRole
from pouw_operator.conditions import Condition

DEVNET_PREFIX = "pouw-devnet"
"""Chain ids that start with it are devnets: their keys are the seeds the genesis funds. Only
a PoUWNode that names such a chain id joins one."""
CHAIN_ID_MAX = 64


def private_chain_id(namespace: str) -> str:
    """The chain of a PoUWNode that names none: its namespace's private chain, never a devnet."""
    chain_id = f"pouw-{namespace or 'default'}"
    if chain_id.startswith(DEVNET_PREFIX):
        chain_id = f"pouw-private-{namespace}"
    return chain_id[:CHAIN_ID_MAX]


Manifest = dict[str, Any]
"""A Kubernetes object of a kind whose schema is not ours (Secret, Service, StatefulSet)."""


# -- around every resource ------------------------------------------------------------------


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    """The metadata fields the operator reads or writes."""

    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    labels: dict[str, str]
    ownerReferences: list[OwnerReference]
    deletionTimestamp: str


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]


# -- PoUWNode -------------------------------------------------------------------------------


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
    """The API server fills the CRD's defaults; `NodeSpec` fills them again for objects that
    never met one."""

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
    tolerations: list[dict[str, Any]]  # core/v1 Tolerations, passed through as written


class PoUWNodeStatus(TypedDict, total=False):
    replicas: int
    readyReplicas: int
    height: int
    peers: int
    selector: str
    observedGeneration: int
    conditions: list[Condition]
    fundedReplicas: list[int]


class PoUWNodeBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PoUWNodeSpec
    status: PoUWNodeStatus


# -- MLTask and Stake: resources paid for through a node ------------------------------------

TaskPhase = Literal["Pending", "Submitted", "Training", "Evaluating", "Completed", "Failed"]
StakePhase = Literal["Pending", "Active", "Failed"]


class PaidStatus(TypedDict, total=False):
    """What the status of every resource paid for through a node has (MLTask, Stake). In a
    merge patch a None field is removed."""

    phase: TaskPhase | StakePhase
    message: str
    observedGeneration: int
    conditions: list[Condition]


class ModelSpec(TypedDict, total=False):
    architecture: str
    layers: Required[list[int]]
    activation: str
    inputShape: list[int]


class DatasetSpec(TypedDict, total=False):
    name: Required[str]
    format: str
    url: str
    sha256: str
    testFraction: float
    splitSeed: int
    rows: int
    features: int
    classes: int


class HyperparametersSpec(TypedDict, total=False):
    learningRate: float
    batchSize: int
    epochs: int
    tau: float


class MLTaskSpec(TypedDict, total=False):
    model: Required[ModelSpec]
    dataset: Required[DatasetSpec]
    optimizer: str
    hyperparameters: HyperparametersSpec
    minAccuracy: float
    miners: int
    aggregator: str
    reward: Required[float]
    fee: float
    networkSelector: LabelSelector


class MLTaskStatus(PaidStatus, total=False):
    taskId: str | None
    submittedTo: str
    epoch: int
    loss: float | None
    accuracy: float | None
    testAccuracy: float | None
    blocks: int
    modelUrl: str | None


class MLTaskBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: MLTaskSpec
    status: MLTaskStatus


class StakeSpec(TypedDict, total=False):
    node: Required[str]
    replica: int
    amount: Required[float]
    role: str


class StakeStatus(PaidStatus, total=False):
    ticketId: str | None
    lockedAmount: float | None


class StakeBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: StakeSpec
    status: StakeStatus


def generation_of(meta: Mapping[str, object]) -> int:
    """metadata.generation, 0 when absent (an object that never met an API server)."""
    generation = meta.get("generation")
    return generation if isinstance(generation, int) and not isinstance(generation, bool) else 0


# -- a PoUWNode as the operator works from it -----------------------------------------------


@dataclass(frozen=True)
class NodeResource:
    """The parts of a PoUWNode object the operator works from (not the node itself: that is
    `pouw.node.PoUWNode`, running in the pods)."""

    name: str
    namespace: str
    uid: str
    spec: PoUWNodeSpec
    generation: int = 0
    status: PoUWNodeStatus = field(default_factory=PoUWNodeStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NodeResource:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            uid=str(metadata.get("uid", "")),
            spec=cast(PoUWNodeSpec, copy.deepcopy(dict(spec)) if isinstance(spec, Mapping) else {}),
            generation=int(metadata.get("generation") or 0),
            status=cast(PoUWNodeStatus, dict(body.get("status") or {})),
        )

    @cached_property
    def resolved(self) -> NodeSpec:
        """The spec with its defaults; ValueError when it cannot be built from."""
        return NodeSpec.parse(self.spec, self.namespace)


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
    chain_id: str = "pouw-default"
    security: bool = True
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def parse(cls, spec: PoUWNodeSpec, namespace: str = "") -> NodeSpec:
        """Raises ValueError naming the field when the spec cannot be built from. Without
        spec.chainId the node joins its namespace's private chain."""
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
            chain_id=str(spec.get("chainId") or private_chain_id(namespace)),
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


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
