"""Consensus parameters, fixed at genesis, and the genesis block they define."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from pouw.blockchain.block import BLOCK_VERSION, Block, BlockHeader, merkle_root
from pouw.blockchain.transactions import COIN, Payout
from pouw.config import DEVNET_CHAIN_PREFIX
from pouw.crypto import ZERO_HASH, KeyPair, hash_value, sha256
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

PositiveInt = Annotated[int, Meta(ge=1)]


class ChainParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    chain_id: Annotated[str, Meta(min_length=1, max_length=64)] = "pouw-devnet"
    genesis_time_ms: int = 1_767_225_600_000
    block_time_ms: PositiveInt = 2_000
    initial_difficulty: PositiveInt = 8
    min_difficulty: PositiveInt = 1
    retarget_window: PositiveInt = 10
    max_block_bytes: PositiveInt = 2 * 1024 * 1024
    """Everything but the checkpoint: header, transactions, iteration message."""
    max_checkpoint_bytes: PositiveInt = 64 * 1024 * 1024
    max_future_drift_ms: PositiveInt = 15_000
    median_time_window: PositiveInt = 11
    max_reorg_depth: PositiveInt = 100
    deep_reorg_work_percent: Annotated[int, Meta(ge=100)] = 200
    """A reorg deeper than max_reorg_depth is taken only when the branch's work since the fork
    is at least this percentage of the main chain's work since the fork (chain.py)."""
    block_reward: Annotated[int, Meta(ge=0)] = 10 * COIN
    min_stake: Annotated[int, Meta(ge=0)] = 1 * COIN
    slash_reporter_share_percent: Annotated[int, Meta(ge=0, le=100)] = 10
    omega_b: Annotated[float, Meta(ge=0.0)] = 1e-3
    """Nonces allowed per training sample of an iteration."""
    omega_m: Annotated[float, Meta(ge=0.0)] = 1e-5
    """Nonces allowed per model parameter of an iteration."""
    checkpoint_interval: Annotated[int, Meta(ge=1, le=1024)] = 16
    """K: iterations per training segment. A block is re-executed from its segment's start,
    at most K iterations (docs/protocol.md, 6.5)."""
    draw_delay: Annotated[int, Meta(ge=1, le=1000)] = 2
    """A task confirmed at height h is drawn when block h + draw_delay is applied, seeded by
    that block's hash, among the tickets confirmed at or below h."""
    task_deadline_blocks: Annotated[int, Meta(ge=2, le=1_000_000)] = 3_600
    """A task confirmed at height h that no result settled by height h + task_deadline_blocks
    is refunded to its client when that block is applied (pouw.blockchain.settlement)."""
    settlement_blocks: Annotated[int, Meta(ge=1, le=100_000)] = 60
    """The last blocks before a deadline, kept for evaluators' results: an evaluator still
    waiting for a drawn miner's final model scores those it has once they begin."""
    allocations: tuple[Payout, ...] = ()
    bootstrap_task: TaskSpec | None = None
    """A perpetual task open from genesis, so that blocks (and the first PAY_FOR_TASK) can be
    mined by training before any client has paid; it holds no escrow and never closes."""


def bootstrap_task_id(params: ChainParams) -> bytes | None:
    if params.bootstrap_task is None:
        return None
    return sha256(b"pouw-bootstrap-task" + hash_value(params.bootstrap_task))


def genesis_block(params: ChainParams) -> Block:
    """Deterministic from the params; its header commits to them through history_commitment."""
    header = BlockHeader(
        version=BLOCK_VERSION,
        height=0,
        prev_hash=ZERO_HASH,
        merkle_root=merkle_root([]),
        timestamp_ms=params.genesis_time_ms,
        difficulty=params.initial_difficulty,
        nonce=0,
        miner=b"",
        iteration_hash=sha256(b""),
        history_commitment=hash_value(params),
        precursor=ZERO_HASH,
    )
    return Block(header=header, transactions=())


DEVNET_BALANCE: Final = 1_000_000 * COIN

KUBERNETES_NODE_NAMES: Final = (
    "supervisor",
    "supervisors",
    "verifier",
    "verifiers",
    "evaluator",
    "evaluators",
    "miner",
    "miners",
    "client",
    "clients",
    "peer",
    "peers",
    "node",
    "nodes",
)

DEVNET_ACCOUNT_NAMES: Final = (
    "node",
    "client",
    "peer",
    "supervisor",
    "verifier",
    "evaluator",
    "miner",
    *(f"miner_{i}" for i in range(16)),
    *(f"miner-{i}" for i in range(16)),
    # Pods of PoUWNode resources with these names (examples/network.yaml): `<name>-<ordinal>`.
    *(
        f"{name}-{i}"
        for name in KUBERNETES_NODE_NAMES
        for i in range(16)
        if f"{name}-{i}" not in {f"miner-{j}" for j in range(16)}
    ),
    "my_miner",
    "performance_miner",
    "secure_node",
    "network_node",
    "faucet",
)
"""Node ids whose devnet keys the default devnet genesis funds, so that the seed README's
examples can stake straight away. A devnet node derives its key from its node id."""


def devnet_key(node_id: str) -> KeyPair:
    """A key anyone can derive from a public name: only devnet chains accept it."""
    return KeyPair.from_seed(b"pouw-devnet:" + node_id.encode())


def is_devnet_chain(chain_id: str) -> bool:
    """Devnet chains fund and accept the name-derived keys; every other chain refuses them."""
    return chain_id.startswith(DEVNET_CHAIN_PREFIX)


@cache
def devnet_public_keys() -> frozenset[bytes]:
    """The public keys of the devnet accounts (DEVNET_ACCOUNT_NAMES), derived once: what a
    non-devnet ledger refuses to accept a signature from."""
    return frozenset(devnet_key(name).public_key for name in DEVNET_ACCOUNT_NAMES)


def is_devnet_key(public_key: bytes, *names: str) -> bool:
    """Whether the key is a devnet account's, or derived from one of `names` (a node id)."""
    return public_key in devnet_public_keys() or any(
        devnet_key(name).public_key == public_key for name in names
    )


def devnet_params(
    names: tuple[str, ...] = DEVNET_ACCOUNT_NAMES,
    balance: int = DEVNET_BALANCE,
    **overrides: object,
) -> ChainParams:
    allocations = tuple(
        Payout(recipient=devnet_key(name).address, amount=balance) for name in names
    )
    params = ChainParams(allocations=allocations, bootstrap_task=DEVNET_BOOTSTRAP_TASK)
    return msgspec.structs.replace(params, **overrides)


DEVNET_BOOTSTRAP_TASK: Final = TaskSpec(
    model=ModelSpec(layers=(64, 128, 64, 10)),
    dataset=DatasetSpec(name="digits"),
    batch_size=100,
    learning_rate=0.1,
    epochs=10_000,
    tau=1e-3,
    miners=1,
)
