"""Coins for the pods of a private chain: each replica of a PoUWNode gets `spec.stake` coins
and a fee from the namespace's faucet, once: what a staking role locks, what a peer pays for
tasks with.

Off devnet a pod's key is random (the node makes it in its data volume) and the genesis funds
only the faucet (`pouw-faucet`), so a staking pod waits for coins (`pouw node` stakes once
funded). The operator, the faucet key's only holder, asks the pod its address (GET /status),
signs a transfer to it and hands it to the pod's own API (POST /transactions, with that node's
token) at the faucet's next nonce as that node sees it (GET /accounts). Transfers are made one
at a time (the memo's faucet lock); the PoUWNode's `status.fundedReplicas` records the funded
ordinals, read fresh before each round, so a pod is funded once, also across operator
restarts. A transfer the node refuses as `duplicate` or `replay` is in already. What it cannot
do: an operator that dies between the transfer and the record funds that pod again (the
faucet pays twice, nobody gains a key), and a nonce another pod took first is retried later.
A pod is trusted with its own address: the worst a subverted pod can do is have its one
funding paid elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pouw.api.client import ApiError, NodeClient
from pouw.spec import DEFAULT_FEE
from pouw_operator.builders.genesis import (
    FAUCET_SECRET,
    build_faucet_transfer,
    faucet_seed,
    key_address,
)
from pouw_operator.builders.naming import pod_name
from pouw_operator.directory import NodeDirectory
from pouw_operator.kube import POUWNODE, SECRET, KubeError
from pouw_operator.memo import OperatorMemo
from pouw_operator.resources import NodeResource

FUNDED_FIELD = "fundedReplicas"
ALREADY_IN = ("duplicate", "replay")


def funded_ordinals(pouwnode: Mapping[str, Any] | None) -> set[int]:
    raw = ((pouwnode or {}).get("status") or {}).get(FUNDED_FIELD) or []
    return {o for o in raw if isinstance(o, int) and not isinstance(o, bool) and o >= 0}


def needs_funding(node: NodeResource) -> bool:
    """Off devnet every replica gets `spec.stake` coins: a staking role locks them in its
    ticket, a peer (which stakes nothing) spends them, paying for tasks (MLTask)."""
    spec = node.resolved
    return not spec.devnet and spec.stake > 0


async def fund_replicas(memo: OperatorMemo, node: NodeResource, nodes: NodeDirectory) -> list[int]:
    """Fund the replicas not funded yet; the ordinals funded now. Raises ApiError (a pod that
    does not answer yet, a refusal) or KubeError: the caller retries later."""
    if not needs_funding(node):
        return []
    kube, namespace, spec = memo.kube, node.namespace, node.resolved
    async with memo.faucet_lock:
        current = await kube.get(POUWNODE, namespace, node.name)
        faucet = await kube.get(SECRET, namespace, FAUCET_SECRET)
        if current is None or faucet is None:
            raise KubeError(404, "NotFound", f"PoUWNode {node.name} or Secret {FAUCET_SECRET}")
        seed, funded, done = faucet_seed(faucet), funded_ordinals(current), []
        amount = spec.stake + DEFAULT_FEE  # the ticket (or a task), and the fee of paying it
        for ordinal in range(spec.replicas):
            if ordinal in funded:
                continue
            client = nodes.client(namespace, nodes.for_pod(namespace, pod_name(node.name, ordinal)))
            await asyncio.to_thread(_transfer, client, seed, spec.chain_id, amount)
            funded.add(ordinal)
            done.append(ordinal)
            patch = {"status": {FUNDED_FIELD: sorted(funded)}}
            await kube.patch(POUWNODE, namespace, node.name, patch, "status")
    return done


def _transfer(client: NodeClient, seed: bytes, chain_id: str, amount: float) -> None:
    """Pay `amount` coins from the faucet of `seed` to the address the pod says it has."""
    with client:
        recipient = client.status().get("address")
        if not isinstance(recipient, str) or not recipient:
            raise ApiError(0, "no address", "the node's /status names no address")
        nonce = int(client.account(key_address(seed))["next_nonce"])
        encoded = build_faucet_transfer(seed, chain_id, recipient, amount, DEFAULT_FEE, nonce)
        try:
            client.relay_transaction(encoded)
        except ApiError as error:
            if error.reason not in ALREADY_IN:
                raise
