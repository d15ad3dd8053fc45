"""A node's signing key and the chain parameters of the network it joins."""

from __future__ import annotations

import os
from pathlib import Path

from pouw.blockchain.params import ChainParams, devnet_params
from pouw.config import DEVNET_CHAIN_PREFIX, ConfigError
from pouw.crypto import KeyPair

KEY_FILE = "node.key"
DEVNET_PREFIX = DEVNET_CHAIN_PREFIX
NETWORK_BLOCK_TIME_MS = 1_000
NETWORK_INITIAL_DIFFICULTY = 2_000
"""About one block a second from a few miners training the demo model on a laptop."""


def network_params(chain_id: str, block_time_ms: int | None = None) -> ChainParams:
    """Every node of a network derives the same genesis from its chain id (and a devnet's
    block time); the initial difficulty scales with the block time."""
    block_time = block_time_ms or NETWORK_BLOCK_TIME_MS
    return devnet_params(
        chain_id=chain_id,
        block_time_ms=block_time,
        initial_difficulty=NETWORK_INITIAL_DIFFICULTY * block_time // NETWORK_BLOCK_TIME_MS,
    )


def load_node_key(
    data_dir: Path, node_id: str, chain_id: str, key_file: Path | None = None
) -> KeyPair:
    """The node's signing key: from `key_file` when one is given (on Kubernetes, a mounted
    Secret the operator wrote), else the key in the data dir (mode 0600), made on first start.
    A new devnet key is derived from the node id: that is what the devnet genesis funds (as
    the seed's examples expect)."""
    if key_file is not None:
        try:
            seed = key_file.read_bytes()
        except OSError as error:
            raise ConfigError(f"POUW_NODE_KEY_FILE={str(key_file)!r}: {error.strerror}") from None
        if not seed:
            raise ConfigError(f"POUW_NODE_KEY_FILE={str(key_file)!r} is empty")
        return KeyPair.from_seed(seed)
    path = data_dir / KEY_FILE
    if path.exists():
        return KeyPair.from_seed(path.read_bytes())
    seed = devnet_seed(node_id) if chain_id.startswith(DEVNET_PREFIX) else os.urandom(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(seed)
    return KeyPair.from_seed(seed)


def devnet_seed(node_id: str) -> bytes:
    """The seed `pouw.blockchain.params.devnet_key` derives a devnet account from."""
    return b"pouw-devnet:" + node_id.encode()
