"""A node's signing key and the chain parameters of the network it joins."""

from __future__ import annotations

import os
from pathlib import Path

from pouw.blockchain.genesis import GENESIS_VARIABLE, devnet_network_params, load_genesis
from pouw.blockchain.params import ChainParams, is_devnet_chain, is_devnet_key
from pouw.config import DEVNET_CHAIN_PREFIX, ConfigError
from pouw.crypto import KeyPair

KEY_FILE = "node.key"


def network_params(
    chain_id: str, genesis_file: Path | None = None, block_time_ms: int | None = None
) -> ChainParams:
    """The genesis of the node's network: a devnet chain's every node derives from its chain
    id; any other chain's comes from its genesis file (`pouw chain init` writes one)."""
    if genesis_file is not None:
        return load_genesis(genesis_file, chain_id)
    if is_devnet_chain(chain_id):
        return devnet_network_params(chain_id, block_time_ms)
    raise ConfigError(
        f"POUW_CHAIN_ID={chain_id!r} is not a devnet chain ({DEVNET_CHAIN_PREFIX}...), so its "
        f"genesis comes from a file: set {GENESIS_VARIABLE} to the chain's genesis file "
        "(`pouw chain init` writes one)"
    )


def load_node_key(
    data_dir: Path, node_id: str, chain_id: str, key_file: Path | None = None
) -> KeyPair:
    """The node's signing key: from `key_file` when one is given (on Kubernetes, a mounted
    Secret the operator wrote), else the key in the data dir (mode 0600), made on first start.
    A new devnet key is derived from the node id: that is what the devnet genesis funds (as
    the seed's examples expect); on any other chain a new key is random."""
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
    seed = devnet_seed(node_id) if is_devnet_chain(chain_id) else os.urandom(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(seed)
    return KeyPair.from_seed(seed)


def check_node_key(
    key: KeyPair, node_id: str, chain_id: str, key_file: Path | None, data_dir: Path
) -> None:
    """Off devnet chains a node refuses to start with a key anyone can derive from a name:
    whatever it staked or earned would be anyone's."""
    if is_devnet_chain(chain_id) or not is_devnet_key(key.public_key, node_id):
        return
    where = (
        f"POUW_NODE_KEY_FILE={str(key_file)!r}"
        if key_file is not None
        else f"{str(data_dir / KEY_FILE)!r}"
    )
    raise ConfigError(
        f"{where} holds a public devnet key ({key.address}), refused on chain {chain_id!r}: "
        "give the node a random key (delete that file and the node makes one on start)"
    )


def devnet_seed(node_id: str) -> bytes:
    """The seed `pouw.blockchain.params.devnet_key` derives a devnet account from."""
    return b"pouw-devnet:" + node_id.encode()
