"""Coins for the pods of a private chain: each replica of a PoUWNode gets `spec.stake` coins
and a fee from the namespace's faucet, once: what a staking role locks, what a peer pays for
tasks with.

Off devnet a pod's key is random and the genesis funds only the faucet (`pouw-faucet`), so a
staking pod waits for coins (`pouw node` stakes once funded). The operator, the faucet key's
only holder, signs a transfer to the pod's address and hands it to the pod's own API (POST
/transactions) at the faucet's next nonce as that node sees it (GET /accounts). Transfers are
made one at a time (the memo's faucet lock); the keys Secret records the funded ordinals
(annotation `pouw.network/funded`), so a pod is funded once, also across operator restarts. A
transfer the node refuses as `duplicate` or `replay` is in already. What it cannot do: an
operator that dies between the transfer and the annotation funds that pod again (the faucet
pays twice, nobody gains a key), and a nonce another pod took first is retried later.
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
from pouw_operator.builders.naming import key_file, keys_secret_name, pod_name
from pouw_operator.builders.secrets import decoded_seed
from pouw_operator.directory import NodeDirectory
from pouw_operator.kube import SECRET, KubeError
from pouw_operator.memo import OperatorMemo
from pouw_operator.resources import NodeResource

FUNDED_ANNOTATION = "pouw.network/funded"
ALREADY_IN = ("duplicate", "replay")


def funded_ordinals(secret: Mapping[str, Any] | None) -> set[int]:
    raw = ((secret or {}).get("metadata") or {}).get("annotations", {}).get(FUNDED_ANNOTATION)
    return {int(part) for part in str(raw or "").split(",") if part.strip().isdigit()}


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
    keys = await kube.get(SECRET, namespace, keys_secret_name(node.name))
    faucet = await kube.get(SECRET, namespace, FAUCET_SECRET)
    if keys is None or faucet is None:
        raise KubeError(404, "NotFound", f"Secret {keys_secret_name(node.name)} or {FAUCET_SECRET}")
    seed, funded, done = faucet_seed(faucet), funded_ordinals(keys), []
    amount = spec.stake + DEFAULT_FEE  # the ticket (or a task), and the fee of paying it
    async with memo.faucet_lock:
        for ordinal in range(spec.replicas):
            file = key_file(node.name, ordinal)
            if ordinal in funded or file not in (keys.get("data") or {}):
                continue
            recipient = key_address(decoded_seed(keys, file))
            client = nodes.client(namespace, nodes.for_pod(namespace, pod_name(node.name, ordinal)))
            await asyncio.to_thread(
                _transfer, client, seed, spec.chain_id, recipient, amount, key_address(seed)
            )
            funded.add(ordinal)
            done.append(ordinal)
            annotation = ",".join(str(o) for o in sorted(funded))
            patch = {"metadata": {"annotations": {FUNDED_ANNOTATION: annotation}}}
            await kube.patch(SECRET, namespace, keys_secret_name(node.name), patch)
    return done


def _transfer(
    client: NodeClient, seed: bytes, chain_id: str, recipient: str, amount: float, faucet: str
) -> None:
    with client:
        nonce = int(client.account(faucet)["next_nonce"])
        encoded = build_faucet_transfer(seed, chain_id, recipient, amount, DEFAULT_FEE, nonce)
        try:
            client.relay_transaction(encoded)
        except ApiError as error:
            if error.reason not in ALREADY_IN:
                raise
