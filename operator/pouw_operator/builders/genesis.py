"""A namespace's private chain: the `pouw-faucet` Secret (a random key seed, the only account
the genesis funds) and the `pouw-genesis` ConfigMap (the genesis file its nodes read from
POUW_GENESIS_FILE). Both are created once and never overwritten: the genesis time is fixed when
the ConfigMap is made, and a new faucet would not be the one the genesis funds.

The genesis is built by the node's own code (pouw.blockchain.genesis), the one definition of
ChainParams, addresses and hashes: the one exception to "the operator talks to nodes only
through the API client" (.importlinter)."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from pouw.blockchain.genesis import (
    encode_genesis,
    faucet_genesis,
    faucet_transfer,
    genesis_hash,
    seed_address,
)
from pouw_operator.builders.naming import APP_NAME, MANAGED_BY_LABEL, MANAGER, NAME_LABEL
from pouw_operator.builders.secrets import Entropy
from pouw_operator.resources import Manifest

FAUCET_SECRET = "pouw-faucet"
FAUCET_SEED_KEY = "seed"
GENESIS_CONFIGMAP = "pouw-genesis"
GENESIS_FILE_KEY = "genesis.json"
CHAIN_ID_KEY = "chainId"
GENESIS_HASH_KEY = "genesisHash"
GENESIS_DIR = "/etc/pouw/genesis"
SEED_BYTES = 32


def _metadata(name: str, namespace: str) -> dict[str, Any]:
    """Owned by nobody: the chain outlives any one PoUWNode."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGER, NAME_LABEL: APP_NAME},
    }


def build_faucet_secret(namespace: str, entropy: Entropy = os.urandom) -> Manifest:
    seed = base64.b64encode(entropy(SEED_BYTES)).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(FAUCET_SECRET, namespace),
        "type": "Opaque",
        "data": {FAUCET_SEED_KEY: seed},
    }


def faucet_seed(secret: Mapping[str, Any]) -> bytes:
    """The seed in a `pouw-faucet` Secret; ValueError when it holds none."""
    encoded = (secret.get("data") or {}).get(FAUCET_SEED_KEY)
    if not encoded:
        raise ValueError(f"Secret {FAUCET_SECRET} has no {FAUCET_SEED_KEY!r}")
    return base64.b64decode(encoded)


def build_genesis_configmap(
    namespace: str, chain_id: str, seed: bytes, genesis_time_ms: int
) -> Manifest:
    """The genesis file of `chain_id`, funding the faucet of `seed`; ValueError (a ConfigError)
    for a devnet chain id, whose genesis every node derives instead."""
    params = faucet_genesis(chain_id, seed, genesis_time_ms)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(GENESIS_CONFIGMAP, namespace),
        "data": {
            GENESIS_FILE_KEY: encode_genesis(params).decode(),
            CHAIN_ID_KEY: chain_id,
            GENESIS_HASH_KEY: genesis_hash(params),
        },
    }


def genesis_chain_id(configmap: Mapping[str, Any]) -> str:
    return str((configmap.get("data") or {}).get(CHAIN_ID_KEY, ""))


def key_address(seed: bytes) -> str:
    return seed_address(seed)


def build_faucet_transfer(
    seed: bytes, chain_id: str, recipient: str, amount: float, fee: float, nonce: int
) -> bytes:
    """A signed transfer of `amount` coins from the faucet of `seed` to `recipient`."""
    return faucet_transfer(seed, chain_id, recipient, amount, fee, nonce)
