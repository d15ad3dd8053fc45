"""The genesis of a network: the standard consensus parameters every network runs, the devnet's
public genesis (devnet chains only), and genesis files for every other chain, which
`pouw chain init` writes and a node reads from POUW_GENESIS_FILE."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from pouw.blockchain.params import (
    DEVNET_BOOTSTRAP_TASK,
    ChainParams,
    devnet_params,
    devnet_public_keys,
    genesis_block,
    is_devnet_chain,
)
from pouw.blockchain.transactions import (
    COIN,
    Payout,
    Transfer,
    coins,
    encode_transaction,
    sign_transaction,
)
from pouw.config import DEVNET_CHAIN_PREFIX, ConfigError
from pouw.crypto import KeyPair, address_of, is_address

NETWORK_BLOCK_TIME_MS: Final = 1_000
NETWORK_INITIAL_DIFFICULTY: Final = 2_000
"""About one block a second from a few miners training the demo model on a laptop."""
GENESIS_VARIABLE: Final = "POUW_GENESIS_FILE"


def network_params(
    chain_id: str, allocations: Sequence[Payout], genesis_time_ms: int
) -> ChainParams:
    """The standard consensus parameters of a network; only the chain id, the genesis time and
    the allocations differ between networks."""
    return ChainParams(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        block_time_ms=NETWORK_BLOCK_TIME_MS,
        initial_difficulty=NETWORK_INITIAL_DIFFICULTY,
        allocations=tuple(allocations),
        bootstrap_task=DEVNET_BOOTSTRAP_TASK,
    )


def devnet_network_params(chain_id: str, block_time_ms: int | None = None) -> ChainParams:
    """A devnet chain's genesis: every node derives it from the chain id (and the devnet's
    block time; the initial difficulty scales with it), and it funds the public devnet keys."""
    if not is_devnet_chain(chain_id):
        raise ConfigError(f"chain {chain_id!r} is not a devnet chain ({DEVNET_CHAIN_PREFIX}...)")
    block_time = block_time_ms or NETWORK_BLOCK_TIME_MS
    return devnet_params(
        chain_id=chain_id,
        block_time_ms=block_time,
        initial_difficulty=NETWORK_INITIAL_DIFFICULTY * block_time // NETWORK_BLOCK_TIME_MS,
    )


def new_genesis(chain_id: str, allocations: Sequence[Payout], genesis_time_ms: int) -> ChainParams:
    """The genesis of a new private chain; ConfigError naming the mistake when it would be a
    devnet, fund nobody, or fund a public devnet key."""
    if is_devnet_chain(chain_id):
        raise ConfigError(
            f"chain id {chain_id!r} is a devnet chain, whose genesis every node derives: "
            f"choose an id that does not start with {DEVNET_CHAIN_PREFIX!r}"
        )
    params = network_params(chain_id, allocations, genesis_time_ms)
    check_allocations(params)
    return params


def check_allocations(params: ChainParams) -> None:
    if not params.allocations:
        raise ConfigError(
            f"the genesis of {params.chain_id!r} funds nobody: give it allocations "
            "(pouw chain init --alloc ADDRESS=COINS or --fund-key KEYFILE)"
        )
    for allocation in params.allocations:
        if not is_address(allocation.recipient) or allocation.amount <= 0:
            raise ConfigError(
                f"allocation {allocation.recipient}={allocation.amount} needs an address and "
                "a positive amount"
            )
    if is_devnet_chain(params.chain_id):
        return
    public = {address_of(key) for key in devnet_public_keys()}
    for allocation in params.allocations:
        if allocation.recipient in public:
            raise ConfigError(
                f"{allocation.recipient} is a public devnet key (its seed derives from a "
                f"name), refused on chain {params.chain_id!r}: fund a key of your own"
            )


def encode_genesis(params: ChainParams) -> bytes:
    return msgspec.json.format(msgspec.json.encode(params), indent=2) + b"\n"


def genesis_hash(params: ChainParams) -> str:
    return genesis_block(params).hash().hex()


def load_genesis(path: Path, chain_id: str) -> ChainParams:
    """The ChainParams of a genesis file (JSON or YAML) for `chain_id`; ConfigError, one line
    naming POUW_GENESIS_FILE, the file and the mistake, when it is not one."""
    where = f"{GENESIS_VARIABLE}={str(path)!r}"
    try:
        document: Any = yaml.safe_load(path.read_text())  # JSON is YAML
    except OSError as error:
        raise ConfigError(f"{where}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where} is neither JSON nor YAML: {_first_line(error)}") from None
    if not isinstance(document, dict) or "allocations" not in document:
        raise ConfigError(
            f"{where} holds no ChainParams with explicit allocations: write one with "
            "`pouw chain init`"
        )
    try:
        params = msgspec.convert(document, ChainParams)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{where} is invalid: {error}") from None
    if params.chain_id != chain_id:
        raise ConfigError(
            f"{where} is the genesis of chain {params.chain_id!r}, not of POUW_CHAIN_ID="
            f"{chain_id!r}: set one to the other"
        )
    try:
        check_allocations(params)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return params


def write_genesis(path: Path, params: ChainParams) -> None:
    """Write a new genesis file; an existing file is never overwritten (it is a chain)."""
    try:
        with path.open("xb") as file:
            file.write(encode_genesis(params))
    except FileExistsError:
        raise ConfigError(
            f"{path} exists: a genesis file is a chain's identity, so it is never overwritten "
            "(choose another --out)"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


FAUCET_COINS: Final = 1_000_000_000
"""What the faucet of an operator-made chain holds at genesis: every coin its nodes stake."""


def faucet_genesis(chain_id: str, faucet_seed: bytes, genesis_time_ms: int) -> ChainParams:
    """The genesis of a chain the Kubernetes operator starts: it funds only the faucet, whose
    seed (random) the operator keeps in a Secret."""
    faucet = KeyPair.from_seed(faucet_seed).address
    return new_genesis(chain_id, [Payout(faucet, FAUCET_COINS * COIN)], genesis_time_ms)


def seed_address(seed: bytes) -> str:
    """The address of the key a seed file holds (a node key, a faucet)."""
    return KeyPair.from_seed(seed).address


def faucet_transfer(
    faucet_seed: bytes, chain_id: str, recipient: str, amount: float, fee: float, nonce: int
) -> bytes:
    """A transfer of `amount` coins (and `fee`) from the faucet, signed and encoded for
    POST /transactions."""
    key = KeyPair.from_seed(faucet_seed)
    payload = Transfer(recipient=recipient, amount=coins(amount))
    tx = sign_transaction(key, payload, nonce=nonce, fee=coins(fee), chain_id=chain_id)
    return encode_transaction(tx)
