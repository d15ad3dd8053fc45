"""A PoUWNode's children applied through the API, in the order its pods need them: the
namespace's `pouw-network` and `pouw-api-root` Secrets (created once, never overwritten), off
devnet the namespace's chain (the `pouw-faucet` Secret and the `pouw-genesis` ConfigMap, each
created once, never overwritten), the node's API token Secret (created once), the headless
Service and the StatefulSet; and the bootstrap peers of the namespace's StatefulSets when its
supervisors change.

Secrets are only ever created: of those, the operator reads back `pouw-api-root` and
`pouw-faucet` alone, by name (docs/security.md, "Cluster least privilege")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kopf

from pouw_operator.builders.genesis import (
    FAUCET_SECRET,
    GENESIS_CONFIGMAP,
    build_faucet_secret,
    build_genesis_configmap,
    faucet_seed,
    genesis_chain_id,
)
from pouw_operator.builders.peers import Supervisor
from pouw_operator.builders.secrets import (
    API_ROOT_SECRET,
    api_root,
    build_api_root_secret,
    build_api_token_secret,
    build_network_secret,
)
from pouw_operator.builders.service import build_service, service_owned_fields
from pouw_operator.builders.statefulset import (
    build_statefulset,
    env_value,
    statefulset_owned_fields,
)
from pouw_operator.kube import CONFIGMAP, SECRET, SERVICE, STATEFULSET, KubeError
from pouw_operator.memo import OperatorMemo
from pouw_operator.resources import NodeResource

PEERS_VARIABLE = "POUW_BOOTSTRAP_PEERS"


async def apply_children(
    memo: OperatorMemo, node: NodeResource, supervisors: Sequence[Supervisor]
) -> None:
    """In dependency order: a pod needs its Secrets (and off devnet its genesis) to start."""
    kube = memo.kube
    await kube.ensure(SECRET, build_network_secret(node.namespace))
    if not node.resolved.devnet:
        await ensure_chain(memo, node)
    await kube.ensure(SECRET, build_api_token_secret(node, await ensure_api_root(memo, node)))
    service = build_service(node)
    await kube.create_or_patch(SERVICE, service, service_owned_fields(service))
    statefulset = build_statefulset(node, memo.settings, supervisors)
    await kube.create_or_patch(STATEFULSET, statefulset, statefulset_owned_fields(statefulset))


def _now_ms() -> int:
    return int(time.time() * 1000)


async def ensure_chain(
    memo: OperatorMemo, node: NodeResource, clock_ms: Callable[[], int] = _now_ms
) -> None:
    """The namespace's private chain: a random faucet key, and a genesis that funds it alone,
    its time fixed now. Concurrent reconciles agree: whichever creates each object first
    wins, and the genesis is built from the faucet Secret as stored. A PoUWNode naming another
    chain than the namespace's fails: one namespace runs one private chain."""
    kube, namespace, chain_id = memo.kube, node.namespace, node.resolved.chain_id
    await kube.ensure(SECRET, build_faucet_secret(namespace))
    faucet = await kube.get(SECRET, namespace, FAUCET_SECRET)
    if faucet is None:
        raise KubeError(409, "Conflict", f"Secret {FAUCET_SECRET} came and went")
    try:
        genesis = build_genesis_configmap(namespace, chain_id, faucet_seed(faucet), clock_ms())
    except ValueError as error:
        raise kopf.PermanentError(f"the namespace's chain cannot be made: {error}") from None
    await kube.ensure(CONFIGMAP, genesis)
    stored = await kube.get(CONFIGMAP, namespace, GENESIS_CONFIGMAP)
    if stored is None:
        raise KubeError(409, "Conflict", f"ConfigMap {GENESIS_CONFIGMAP} came and went")
    if genesis_chain_id(stored) != chain_id:
        raise kopf.PermanentError(
            f"spec.chainId={chain_id!r}, but namespace {namespace} runs chain "
            f"{genesis_chain_id(stored)!r} (ConfigMap {GENESIS_CONFIGMAP}): set spec.chainId to "
            "it, or put this PoUWNode in another namespace"
        )


async def ensure_api_root(memo: OperatorMemo, node: NodeResource) -> bytes:
    """The namespace's API token root, made on first use; whoever creates it first wins."""
    root = api_root(await memo.kube.get(SECRET, node.namespace, API_ROOT_SECRET))
    if root is None:
        await memo.kube.ensure(SECRET, build_api_root_secret(node.namespace))
        root = api_root(await memo.kube.get(SECRET, node.namespace, API_ROOT_SECRET))
    if root is None:
        raise KubeError(409, "Conflict", f"Secret {API_ROOT_SECRET} came and went, or is empty")
    return root


async def rewire(
    memo: OperatorMemo,
    nodes: Iterable[NodeResource],
    supervisors: Sequence[Supervisor],
    skip: str | None,
) -> list[str]:
    """Give each node's StatefulSet the bootstrap peers `supervisors` make; returns the names
    of those that changed. A node whose StatefulSet is not there yet gets them when it is."""
    rewired = []
    for node in nodes:
        if node.name != skip and await repair_peers(memo, node, supervisors):
            rewired.append(node.name)
    return rewired


async def repair_peers(
    memo: OperatorMemo,
    node: NodeResource,
    supervisors: Sequence[Supervisor],
    statefulset: Mapping[str, Any] | None = None,
) -> bool:
    try:
        desired = build_statefulset(node, memo.settings, supervisors)
    except (TypeError, ValueError):
        return False
    current = statefulset or await memo.kube.get(STATEFULSET, node.namespace, node.name)
    if current is None or env_value(current, PEERS_VARIABLE) == env_value(desired, PEERS_VARIABLE):
        return False
    await memo.kube.patch(
        STATEFULSET,
        node.namespace,
        node.name,
        {"spec": {"template": desired["spec"]["template"]}},
    )
    return True
