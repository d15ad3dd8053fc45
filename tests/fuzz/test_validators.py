"""The validators, fuzzed: hypothesis builds valid transactions and blocks, mutates them, and
checks every verdict.

- Transactions against the ledger state and the mempool: a mutation (amount, fee, nonce,
  signature, sender, chain, payload) is refused with the reason that names it and changes
  nothing; an untouched one applies with the exact balance arithmetic, and reverting its
  recorded changes restores the state exactly.
- Blocks against the chain: header fields, transaction lists, sizes, signatures and seals
  mutated, with or without re-sealing (so that both the early and the late rules are reached):
  an invalid block raises InvalidBlock with a reason from the documented set and leaves tip,
  state and store as they were; a valid one extends the chain, and its stored undo record
  reverts the state exactly.
- Re-execution (the verifier) on real mined blocks with their iteration message mutated and the
  header made consistent again: InvalidBlock with a documented reason, never another error.
- The mempool under random arrivals: never above its bound, evicting its lowest fee only for a
  newcomer that pays more, its selection always a valid block body.

The documented reasons are the sets below; a test keeps them equal to the reasons the code
raises, so a new rule cannot go unlisted.
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median_low
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pouw.blockchain.block import Block, BlockHeader, merkle_root
from pouw.blockchain.chain import AddStatus, Chain
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.params import ChainParams, devnet_key, devnet_params
from pouw.blockchain.state import LedgerState
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import (
    BuyTicket,
    FailedReexecution,
    PayForTask,
    Payload,
    RankedModel,
    Reward,
    SlashEvidence,
    TaskResult,
    Transaction,
    Transfer,
    reward_transaction,
    sign_transaction,
)
from pouw.crypto import KeyPair, sha256
from pouw.errors import InvalidBlock, InvalidTransaction, Reason
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec
from tests.fuzz import fuzz_settings
from tests.support.placeholder_seal import seal_with_plain_hash

CHAIN_ID = "pouw-devnet"
NAMES = tuple(f"account-{i}" for i in range(6))
KEYS = [devnet_key(name) for name in NAMES]
STRANGER = devnet_key("stranger")  # unfunded
BALANCE = 10**9
MAX_BLOCK_BYTES = 64 * 1024
MAX_CHECKPOINT_BYTES = 4 * 1024
NODE = Path(__file__).resolve().parents[2] / "node" / "pouw"

TX_REASONS = frozenset(
    {
        # the ledger state (pouw.blockchain.state)
        "unexpected_reward", "bad_signature", "replay", "nonce_gap", "overspend", "zero_amount",
        "invalid_task_spec", "stake_below_minimum", "unknown_task", "task_closed",
        "not_an_evaluator", "unknown_ticket", "bad_reward", "devnet_key",
        # task settlement (pouw.blockchain.settlement)
        "task_expired", "task_not_drawn", "result_already_sent", "not_drawn_miner",
        "bad_ranking", "model_not_signed", "already_withdrawn",
        # a slash's proof (pouw.blockchain.slashing)
        "reporter_without_ticket", "malformed_evidence", "bad_evidence_signature",
        "evidence_wrong_ticket", "evidence_not_proven",
        # the mempool's own
        "duplicate", "duplicate_nonce", "too_many_pending", "mempool_full",
    }
)  # fmt: skip
BLOCK_REASONS = frozenset(
    {
        # shape, size, merkle root, seal, signature (pouw.blockchain.validation)
        "bad_version", "oversized_block", "oversized_checkpoint", "missing_reward",
        "extra_reward", "duplicate_transaction", "bad_merkle_root", "bad_iteration_hash",
        "target_not_met", "bad_block_signature",
        # the header in its chain
        "wrong_prev_hash", "wrong_height", "timestamp_out_of_bounds", "wrong_difficulty",
        "reorg_too_deep",
        # `pouw chain verify`: a stored body that does not hash to its key
        "hash_mismatch",
    }
)  # fmt: skip
SEAL_REASONS = frozenset(
    {
        # the PoUW seal every node checks, and re-execution (pouw.mining.verify)
        "malformed_iteration", "unknown_task", "miner_mismatch", "commitment_mismatch",
        "precursor_mismatch", "nonce_over_budget", "nonce_not_derived", "dataset_unavailable",
        "bad_worker_index", "batch_mismatch", "corrupt_model", "unrunnable_task",
        "stale_start_model", "loss_mismatch", "accuracy_mismatch", "update_mismatch",
        "inexact_device", "bad_position", "checkpoint_bytes", "checkpoint_mismatch",
    }
)  # fmt: skip
CLAIM_REASONS = frozenset(
    {
        # what the iteration claims against the branch (pouw.mining.claims)
        "malformed_iteration", "unknown_task", "not_drawn", "stale_position", "segment_fork",
    }
)  # fmt: skip
"""A block's transaction failing makes the block fail with the transaction's reason."""


def params(**overrides: object) -> ChainParams:
    base: dict[str, object] = {
        "initial_difficulty": 4,
        "max_block_bytes": MAX_BLOCK_BYTES,
        "max_checkpoint_bytes": MAX_CHECKPOINT_BYTES,
    }
    return devnet_params(NAMES, balance=BALANCE, **{**base, **overrides})


def signed(
    key: KeyPair, payload: Payload, nonce: int, fee: int = 10, chain: str = CHAIN_ID
) -> Transaction:
    return sign_transaction(key, payload, nonce=nonce, fee=fee, chain_id=chain)


# -- the documented reasons are the raised ones --------------------------------------------------


def _raised_reasons(path: Path) -> set[str]:
    """First arguments of InvalidTransaction(...), InvalidBlock(...) and reject(...) calls,
    and of the `reason = Reason.A if ... else Reason.B` they are given."""
    reasons: set[str] = set()

    def literals(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return [Reason[node.attr].value] if node.value.id == "Reason" else []
        if isinstance(node, ast.IfExp):
            return literals(node.body) + literals(node.orelse)
        return []

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("InvalidTransaction", "InvalidBlock", "reject")
            and node.args
        ):
            reasons.update(literals(node.args[0]))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
        ):
            reasons.update(literals(node.value))
    return reasons


def test_the_documented_reasons_are_the_ones_the_code_raises() -> None:
    ledger = set().union(*(_raised_reasons(p) for p in (NODE / "blockchain").glob("*.py")))
    seal = _raised_reasons(NODE / "mining" / "verify.py")
    claims = _raised_reasons(NODE / "mining" / "claims.py")
    assert ledger == (TX_REASONS | BLOCK_REASONS) - {"reorg_too_deep"}
    assert seal == SEAL_REASONS
    assert claims == CLAIM_REASONS


# -- transactions --------------------------------------------------------------------------------

TX_MUTATIONS = [
    "none", "amount_over", "amount_zero", "fee_over", "nonce_high", "nonce_low",
    "signature_flip", "signature_short", "sender_swap", "other_chain", "payload_swap",
    "reward", "stake_low", "bad_spec", "unknown_task", "unknown_ticket", "unfunded",
]  # fmt: skip
EXPECTED = {
    "amount_over": "overspend", "amount_zero": "zero_amount", "fee_over": "overspend",
    "nonce_high": "nonce_gap", "nonce_low": "replay", "signature_flip": "bad_signature",
    "signature_short": "bad_signature", "sender_swap": "bad_signature",
    "other_chain": "bad_signature", "payload_swap": "bad_signature",
    "reward": "unexpected_reward", "stake_low": "stake_below_minimum",
    "bad_spec": "invalid_task_spec", "unknown_task": "unknown_task",
    "unknown_ticket": "unknown_ticket", "unfunded": "overspend",
}  # fmt: skip
PAYLOAD_RULES = {"amount_zero", "stake_low", "bad_spec", "unknown_task", "unknown_ticket"}
"""Mutations only the ledger's payload rules catch (the mempool checks them with the ledger's
code)."""
DIGITS = TaskSpec(model=ModelSpec(layers=(64, 16, 10)), dataset=DatasetSpec(name="digits"))


def _state_with_history(history: int) -> LedgerState:
    """A genesis state where the first account has sent `history` transfers."""
    state = LedgerState.genesis(params())
    with state.tracking():
        for nonce in range(history):
            tx = signed(KEYS[0], Transfer(KEYS[1].address, 1), nonce)
            state.apply_transaction(tx, tx.txid(), 1)
    return state


STATES = {history: _state_with_history(history) for history in (0, 3)}


@dataclass
class Draft:
    """A valid transfer about to be signed, and what it is checked against."""

    state: LedgerState
    key: KeyPair
    recipient: KeyPair
    amount: int
    fee: int
    nonce: int
    payload: Payload
    chain: str = CHAIN_ID

    @property
    def balance(self) -> int:
        return self.state.account(self.key.address).balance


Edit = Callable[[st.DrawFn, Draft], None]


def _set(**changes: Callable[[st.DrawFn, Draft], Any]) -> Edit:
    def edit(draw: st.DrawFn, draft: Draft) -> None:
        for name, value in changes.items():
            setattr(draft, name, value(draw, draft))

    return edit


BEFORE_SIGNING: dict[str, Edit] = {
    "amount_over": _set(
        payload=lambda draw, d: Transfer(
            d.recipient.address, d.balance - d.fee + draw(st.integers(1, 10**9))
        )
    ),
    "amount_zero": _set(payload=lambda draw, d: Transfer(d.recipient.address, 0)),
    "fee_over": _set(fee=lambda draw, d: d.balance + draw(st.integers(0, 10**9))),
    "nonce_high": _set(nonce=lambda draw, d: d.nonce + draw(st.integers(1, 2**40))),
    "nonce_low": _set(nonce=lambda draw, d: draw(st.integers(0, d.nonce - 1))),
    "other_chain": _set(chain=lambda draw, d: draw(st.sampled_from(["pouw-testnet", "x", ""]))),
    "stake_low": _set(
        payload=lambda draw, d: BuyTicket(
            NodeRole.MINER, draw(st.integers(0, d.state.params.min_stake - 1))
        )
    ),
    "bad_spec": _set(
        payload=lambda draw, d: PayForTask(
            msgspec.structs.replace(DIGITS, dataset=DatasetSpec(name="not-a-builtin")), d.amount
        )
    ),
    "unknown_task": _set(
        payload=lambda draw, d: TaskResult(
            sha256(b"no such task"),
            (RankedModel(d.recipient.address, sha256(b"m"), 0.5, sha256(b"b"), bytes(64)),),
        )
    ),
    "unknown_ticket": _set(
        payload=lambda draw, d: SlashEvidence(sha256(b"no ticket"), FailedReexecution(b""))
    ),
    "reward": _set(payload=lambda draw, d: Reward(d.recipient.address, d.amount)),
    "unfunded": _set(key=lambda draw, d: STRANGER, nonce=lambda draw, d: 0),
}


def _flip(draw: st.DrawFn, tx: Transaction) -> Transaction:
    flipped = bytearray(tx.signature)
    flipped[draw(st.integers(0, 63), label="byte")] ^= 1 << draw(st.integers(0, 7), label="bit")
    return msgspec.structs.replace(tx, signature=bytes(flipped))


AFTER_SIGNING: dict[str, Callable[[st.DrawFn, Draft, Transaction], Transaction]] = {
    "signature_flip": lambda draw, d, tx: _flip(draw, tx),
    "signature_short": lambda draw, d, tx: msgspec.structs.replace(
        tx, signature=tx.signature[: draw(st.integers(0, 63))]
    ),
    "sender_swap": lambda draw, d, tx: msgspec.structs.replace(
        tx, sender=draw(st.sampled_from([k for k in KEYS if k is not d.key])).public_key
    ),
    "payload_swap": lambda draw, d, tx: msgspec.structs.replace(
        tx, payload=Transfer(d.recipient.address, d.amount + 1)
    ),
}
assert set(BEFORE_SIGNING) | set(AFTER_SIGNING) | {"none"} == set(TX_MUTATIONS)


@st.composite
def mutated_transactions(draw: st.DrawFn) -> tuple[LedgerState, Transaction, str]:
    state = STATES[draw(st.sampled_from(sorted(STATES)), label="history")]
    key = draw(st.sampled_from(KEYS), label="sender")
    recipient = draw(st.sampled_from([*KEYS, STRANGER]), label="recipient")
    amount = draw(st.integers(1, 10**6), label="amount")
    nonce = state.account(key.address).nonce
    draft = Draft(
        state, key, recipient, amount, draw(st.integers(1, 10**4), label="fee"), nonce,
        Transfer(recipient.address, amount),
    )  # fmt: skip
    mutation = draw(st.sampled_from(TX_MUTATIONS), label="mutation")
    if mutation == "nonce_low" and nonce == 0:
        mutation = "nonce_high"
    if mutation in BEFORE_SIGNING:
        BEFORE_SIGNING[mutation](draw, draft)
    tx = signed(draft.key, draft.payload, draft.nonce, draft.fee, draft.chain)
    if mutation in AFTER_SIGNING:
        tx = AFTER_SIGNING[mutation](draw, draft, tx)
    return state, tx, mutation


def _total(state: LedgerState) -> int:
    return sum(a.balance + a.locked for a in state.accounts.values())


@fuzz_settings(500)
@given(case=mutated_transactions())
def test_a_mutated_transaction_is_refused_with_its_reason_and_changes_nothing(
    case: tuple[LedgerState, Transaction, str],
) -> None:
    state, tx, mutation = case
    before = state.snapshot()
    txid = tx.txid()
    if mutation == "none":
        sender = state.account(tx.sender_address)
        with state.tracking() as changes:
            state.apply_transaction(tx, txid, 2)
        assert isinstance(tx.payload, Transfer)
        assert state.account(tx.sender_address).nonce == sender.nonce + 1
        assert _total(state) == sum(a.balance + a.locked for a in before.accounts.values()) - tx.fee
        state.revert(changes)
    else:
        with pytest.raises(InvalidTransaction) as refused, state.tracking():
            state.apply_transaction(tx, txid, 2)
        assert refused.value.reason == EXPECTED[mutation], refused.value
        assert refused.value.reason in TX_REASONS
    assert state.snapshot() == before


@fuzz_settings(300)
@given(case=mutated_transactions())
def test_the_mempool_refuses_what_the_ledger_refuses_for_signature_nonce_and_balance(
    case: tuple[LedgerState, Transaction, str],
) -> None:
    state, tx, mutation = case
    assume(mutation not in PAYLOAD_RULES)
    pool = Mempool(8)
    before = state.snapshot()
    if mutation == "none":
        assert pool.add(tx, state) == tx.txid()
        assert pool.select(state, 1 << 20, 2) == [tx]
    else:
        with pytest.raises(InvalidTransaction) as refused:
            pool.add(tx, state)
        assert refused.value.reason == EXPECTED[mutation]
        assert len(pool) == 0
    assert state.snapshot() == before


@fuzz_settings(50)
@given(case=mutated_transactions())
def test_the_mempool_admits_only_what_a_block_could_hold(
    case: tuple[LedgerState, Transaction, str],
) -> None:
    state, tx, mutation = case
    assume(mutation in PAYLOAD_RULES)
    pool = Mempool(8)
    before = state.snapshot()
    with pytest.raises(InvalidTransaction) as refused:
        pool.add(tx, state)
    assert refused.value.reason == EXPECTED[mutation]
    assert len(pool) == 0
    assert state.snapshot() == before


# -- the mempool under random arrivals -----------------------------------------------------------


@fuzz_settings(150)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(0, len(KEYS) - 1), st.integers(0, 50), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    bound=st.integers(1, 8),
)
def test_a_full_mempool_evicts_its_lowest_fee_and_stays_within_its_bound(
    arrivals: list[tuple[int, int, bool]], bound: int
) -> None:
    state = STATES[0]
    pool = Mempool(bound)
    for index, fee, replace in arrivals:
        key = KEYS[index]
        pending = sorted(t.nonce for t in pool.transactions() if t.sender == key.public_key)
        nonce = pending[-1] if replace and pending else len(pending)
        tx = signed(key, Transfer(STRANGER.address, 1 + fee), nonce, fee)
        present = {t.txid(): t for t in pool.transactions()}
        try:
            pool.add(tx, state)
        except InvalidTransaction as refused:
            assert refused.reason in TX_REASONS
            if refused.reason == "mempool_full":
                assert len(present) == bound
                lowest = min(t.fee for t in present.values())
                own_lowest = any(
                    t.sender == key.public_key and t.fee == lowest for t in present.values()
                )  # evicting its own earlier nonce would leave it behind a gap: refused
                assert fee <= lowest or own_lowest
            assert {t.txid() for t in pool.transactions()} == set(present)
            continue
        gone = [t for txid, t in present.items() if txid not in pool]
        replaced = [t for t in gone if t.sender == tx.sender and t.nonce == tx.nonce]
        evicted = [t for t in gone if t not in replaced]
        if evicted and not replaced:
            first = min(evicted, key=lambda t: (t.sender != evicted[0].sender, t.nonce))
            assert first.fee == min(t.fee for t in present.values()) < fee
            assert all(t.sender == first.sender and t.nonce >= first.nonce for t in evicted)
        assert len(pool) <= bound
        selection = pool.select(state, 1 << 20, 2)
        with state.tracking() as changes:
            for chosen in selection:  # the selection applies, in order, as a block body would
                state.apply_transaction(chosen, chosen.txid(), 2)
            state.revert(changes)


# -- blocks ----------------------------------------------------------------------------------------


class Clock:
    now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Chain, Clock]]:
    with tempfile.TemporaryDirectory(prefix="pouw-fuzz-") as tmp:
        clock = Clock()
        chain = Chain(ChainStore(Path(tmp)), params(), clock_ms=clock)
        yield chain, clock
        chain.store.close()


def _valid_block(chain: Chain, draw: st.DrawFn) -> Block:
    """A sealed, signed block on the tip with a few valid transfers."""
    miner = draw(st.sampled_from(KEYS), label="miner")
    txs = []
    for sender in draw(st.lists(st.sampled_from(KEYS), max_size=4, unique=True), label="senders"):
        nonce = chain.state.account(sender.address).nonce
        fee = draw(st.integers(0, 100), label="fee")
        txs.append(
            signed(sender, Transfer(STRANGER.address, draw(st.integers(1, 999))), nonce, fee)
        )
    timestamp = chain.tip.header.timestamp_ms + chain.params.block_time_ms
    block = chain.assemble_block(miner.public_key, miner.address, txs, timestamp_ms=timestamp)
    return seal_with_plain_hash(block, miner, CHAIN_ID)


def _resealed(block: Block, key: KeyPair | None = None) -> Block:
    """The block with its merkle root recomputed, sealed and signed again (by its miner)."""
    header = msgspec.structs.replace(
        block.header,
        merkle_root=merkle_root([tx.txid() for tx in block.transactions]),
        iteration_hash=sha256(block.iteration_message),
    )
    miner = key or next(k for k in KEYS if k.public_key == block.header.miner)
    return seal_with_plain_hash(msgspec.structs.replace(block, header=header), miner, CHAIN_ID)


UNSEALED = frozenset({"target_not_met", "bad_block_signature"})
"""A header changed and not sealed again: its hash misses the target, or meets it by luck and
no longer matches the signature."""


@dataclass
class Forgery:
    """A valid block being mutated, and what its mutation must be refused for: `sealed` once
    sealed and signed again, `raw` as it is."""

    chain: Chain
    block: Block
    sealed: set[str]
    raw: set[str]

    @property
    def header(self) -> BlockHeader:
        return self.block.header

    @property
    def txs(self) -> list[Transaction]:
        return list(self.block.transactions)

    def set(self, **changes: Any) -> None:
        header = msgspec.structs.replace(self.header, **changes)
        self.block = msgspec.structs.replace(self.block, header=header)

    def set_txs(self, txs: list[Transaction]) -> None:
        self.block = msgspec.structs.replace(self.block, transactions=tuple(txs))


def _header(name: str, values: Callable[[Forgery], st.SearchStrategy[Any]], sealed: str) -> Any:
    """A mutation of one header field: refused for `sealed` when sealed again, else for the
    changed hash."""

    def mutate(draw: st.DrawFn, forgery: Forgery) -> None:
        forgery.set(**{name: draw(values(forgery), label=name)})
        forgery.sealed, forgery.raw = {sealed}, set(UNSEALED)

    return mutate


def _median_past(forgery: Forgery) -> int:
    chain = forgery.chain
    window = chain.ancestor_headers(chain.tip.hash, chain.params.median_time_window)
    return int(median_low([h.timestamp_ms for h in window]))


def _m_version(draw: st.DrawFn, f: Forgery) -> None:
    f.set(version=draw(st.integers(2, 2**63 - 1)))
    f.sealed = f.raw = {"bad_version"}


def _m_prev_hash(draw: st.DrawFn, f: Forgery) -> None:
    parent = draw(st.binary(min_size=32, max_size=32).filter(lambda h: not f.chain.contains(h)))
    f.set(prev_hash=parent)
    f.sealed = f.raw = {"orphan"}


def _m_drop_reward(draw: st.DrawFn, f: Forgery) -> None:
    f.set_txs(f.txs[1:])
    f.sealed = f.raw = {"missing_reward"}


def _m_extra_reward(draw: st.DrawFn, f: Forgery) -> None:
    txs = f.txs
    txs.insert(draw(st.integers(1, len(txs))), reward_transaction(STRANGER.address, 1, 99))
    f.set_txs(txs)
    f.sealed = f.raw = {"extra_reward"}


def _m_duplicate_tx(draw: st.DrawFn, f: Forgery) -> None:
    txs = f.txs
    f.set_txs([*txs, txs[draw(st.integers(0, len(txs) - 1))]])
    f.sealed = f.raw = {"duplicate_transaction", "extra_reward"}


def _m_reward_amount(draw: st.DrawFn, f: Forgery) -> None:
    txs = f.txs
    reward = txs[0].payload
    assert isinstance(reward, Reward)
    amount = draw(st.integers(0, 2**62).filter(lambda a: a != reward.amount))
    f.set_txs([reward_transaction(reward.recipient, amount, f.header.height), *txs[1:]])
    f.sealed, f.raw = {"bad_reward"}, {"bad_merkle_root"}


def _m_reorder(draw: st.DrawFn, f: Forgery) -> None:
    txs = f.txs
    assume(len(txs) > 2)
    f.set_txs([txs[0], *reversed(txs[1:])])
    f.sealed, f.raw = {"extended"}, {"bad_merkle_root"}  # one transfer per sender: any order


def _m_bad_tx(draw: st.DrawFn, f: Forgery) -> None:
    sender = draw(st.sampled_from(KEYS))
    nonce = f.chain.state.account(sender.address).nonce + draw(st.integers(2, 5))
    f.set_txs([*f.txs, signed(sender, Transfer(STRANGER.address, 1), nonce, 0)])
    f.sealed, f.raw = {"nonce_gap"}, {"bad_merkle_root"}


def _m_tx_signature(draw: st.DrawFn, f: Forgery) -> None:
    """A transaction's id leaves its signature out: the block's hash does not change."""
    txs = f.txs
    assume(len(txs) > 1)
    index = draw(st.integers(1, len(txs) - 1))
    txs[index] = msgspec.structs.replace(txs[index], signature=bytes(64))
    f.set_txs(txs)
    f.sealed = f.raw = {"bad_signature"}


def _m_oversized(draw: st.DrawFn, f: Forgery) -> None:
    padding = bytes(draw(st.integers(MAX_BLOCK_BYTES, 2 * MAX_BLOCK_BYTES)))
    f.block = msgspec.structs.replace(f.block, iteration_message=padding)
    f.sealed = f.raw = {"oversized_block"}


def _m_checkpoint(draw: st.DrawFn, f: Forgery) -> None:
    size = draw(st.integers(MAX_CHECKPOINT_BYTES + 1, 3 * MAX_CHECKPOINT_BYTES))
    f.block = msgspec.structs.replace(f.block, checkpoint=bytes(size))
    f.sealed = f.raw = {"oversized_checkpoint"}


BLOCK_MUTATIONS: dict[str, Callable[[st.DrawFn, Forgery], None]] = {
    "version": _m_version,
    "timestamp": _header(
        "timestamp_ms", lambda f: st.integers(1, 10_000).map(f.header.timestamp_ms.__add__),
        "extended",
    ),
    "timestamp_future": _header(
        "timestamp_ms", lambda f: st.integers(60_000, 2**40).map(f.header.timestamp_ms.__add__),
        "timestamp_out_of_bounds",
    ),
    "timestamp_past": _header(
        "timestamp_ms",
        lambda f: st.integers(0, 2**20).map(lambda k: _median_past(f) * k // 2**20),
        "timestamp_out_of_bounds",
    ),
    "difficulty": _header(
        "difficulty", lambda f: st.integers(1, 1000).map(f.header.difficulty.__add__),
        "wrong_difficulty",
    ),
    "height": _header(
        "height",
        lambda f: st.integers(1, 2**40 - 1).map(lambda k: (f.header.height + k) % 2**40),
        "wrong_height",
    ),
    "prev_hash": _m_prev_hash,
    "drop_reward": _m_drop_reward,
    "extra_reward": _m_extra_reward,
    "reward_amount": _m_reward_amount,
    "duplicate_tx": _m_duplicate_tx,
    "reorder": _m_reorder,
    "bad_tx": _m_bad_tx,
    "tx_signature": _m_tx_signature,
    "oversized": _m_oversized,
    "checkpoint": _m_checkpoint,
}  # fmt: skip


def _with_header(block: Block, **changes: Any) -> Block:
    return msgspec.structs.replace(block, header=msgspec.structs.replace(block.header, **changes))


def _flip_block_signature(draw: st.DrawFn, block: Block) -> Block:
    signature = bytearray(block.signature)
    signature[draw(st.integers(0, 63))] ^= 1
    return msgspec.structs.replace(block, signature=bytes(signature))


def _signed_by_another(draw: st.DrawFn, block: Block) -> Block:
    """The header names one miner, another key seals and signs it."""
    named = draw(st.sampled_from([k for k in KEYS if k.public_key != block.header.miner]))
    signer = next(k for k in KEYS if k.public_key != named.public_key)
    return seal_with_plain_hash(_with_header(block, miner=named.public_key), signer, CHAIN_ID)


UNSEALABLE: dict[str, tuple[Callable[[st.DrawFn, Block], Block], set[str]]] = {
    "merkle": (
        lambda draw, b: _with_header(b, merkle_root=draw(st.binary(min_size=32, max_size=32))),
        {"bad_merkle_root"},
    ),
    "iteration_hash": (
        lambda draw, b: _with_header(b, iteration_hash=sha256(b"other")),
        {"bad_iteration_hash"},
    ),
    "nonce": (
        lambda draw, b: _with_header(b, nonce=b.header.nonce + draw(st.integers(1, 2**40))),
        set(UNSEALED),
    ),
    "signature": (_flip_block_signature, {"bad_block_signature"}),
    "miner": (_signed_by_another, {"bad_block_signature"}),
}
"""Mutations that sealing again would undo, or that are about the signature itself."""


@st.composite
def mutated_blocks(draw: st.DrawFn, chain: Chain) -> tuple[Block, str, set[str]]:
    """No draw's range depends on the chain, which grows from case to case: hypothesis replays
    choice sequences and requires the same draws from them (the chain's values enter through
    `map`)."""
    block = _valid_block(chain, draw)
    names = ["none", *BLOCK_MUTATIONS, *UNSEALABLE]
    mutation = draw(st.sampled_from(names), label="mutation")
    if mutation == "none":
        return block, mutation, {"extended"}
    if mutation in UNSEALABLE:
        forge, expected = UNSEALABLE[mutation]
        forged = forge(draw, block)
        assume(forged.hash() != block.hash() or mutation == "signature")
        return forged, mutation, expected
    forgery = Forgery(chain, block, set(), set())
    BLOCK_MUTATIONS[mutation](draw, forgery)
    if draw(st.booleans(), label="sealed again"):
        return _resealed(forgery.block), mutation, forgery.sealed
    return forgery.block, mutation, forgery.raw


@fuzz_settings(400)
@given(data=st.data())
def test_a_mutated_block_is_refused_with_a_documented_reason_and_changes_nothing(
    chain: tuple[Chain, Clock], data: st.DataObject
) -> None:
    ledger, clock = chain
    clock.now_ms = ledger.tip.header.timestamp_ms + 20_000
    block, mutation, expected = data.draw(mutated_blocks(ledger), label="block")
    tip, before = ledger.tip.hash, ledger.state.snapshot()
    try:
        update = ledger.add_block(block)
    except InvalidBlock as refused:
        assert refused.reason in BLOCK_REASONS | TX_REASONS, refused
        assert refused.reason in expected, f"{mutation}: {refused}"
        assert ledger.tip.hash == tip and ledger.store.tip_hash() == tip
        assert ledger.state.snapshot() == before
        assert not ledger.contains(block.hash()) or ledger.is_main(block.hash())
        return
    outcome = update.status.value
    if update.status in (AddStatus.ORPHAN, AddStatus.DUPLICATE, AddStatus.SIDE_BRANCH):
        assert outcome in expected | {"duplicate", "side_branch"}, f"{mutation}: {outcome}"
        assert ledger.tip.hash == tip and ledger.state.snapshot() == before
        return
    assert outcome in expected, f"{mutation}: {outcome}"
    after = ledger.state.snapshot()
    undo = ledger.store.undo(block.hash())
    ledger.state.revert(undo)  # the stored undo record restores the state exactly ...
    assert ledger.state.snapshot() == before
    ledger.state.apply_block(block, [tx.txid() for tx in block.transactions])  # ... and back
    assert ledger.state.snapshot() == after


@fuzz_settings(25)
@given(data=st.data())
def test_a_reorg_away_from_random_valid_blocks_restores_the_state_exactly(
    data: st.DataObject,
) -> None:
    """Valid blocks, then a heavier empty branch from before them: the state must equal that
    of a chain that only ever saw the branch."""
    with tempfile.TemporaryDirectory(prefix="pouw-fuzz-") as tmp:
        clock = Clock()
        clock.now_ms = 2**62
        ledger = Chain(ChainStore(Path(tmp) / "a"), params(), clock_ms=clock)
        fresh = Chain(ChainStore(Path(tmp) / "b"), params(), clock_ms=clock)
        fork = ledger.tip.hash
        count = data.draw(st.integers(1, 3), label="blocks")
        for _ in range(count):
            assert ledger.add_block(_valid_block(ledger, data.draw)).status == AddStatus.EXTENDED
        parent = fork
        for _ in range(count + 1):
            entry = ledger.entry(parent)
            assert entry is not None
            empty = ledger.assemble_block(
                STRANGER.public_key,
                STRANGER.address,
                [],
                timestamp_ms=entry.header.timestamp_ms + ledger.params.block_time_ms,
                parent_hash=parent,
            )
            empty = seal_with_plain_hash(empty, STRANGER, CHAIN_ID)
            ledger.add_block(empty)
            fresh.add_block(empty)
            parent = empty.hash()
        assert ledger.tip.hash == fresh.tip.hash
        assert ledger.state.snapshot() == fresh.state.snapshot()
        ledger.store.close()
        fresh.store.close()


# -- re-execution ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Block]]:
    from pouw.bench.mining import MiningRig
    from pouw.ml.iteration import configure_determinism

    spec = TaskSpec(
        model=ModelSpec(layers=(64, 32, 10)),
        dataset=DatasetSpec(name="digits"),
        batch_size=64,
        epochs=3,
        tau=1e-3,
        miners=1,
    )
    configure_determinism()
    rig = MiningRig(spec, tmp_path_factory.mktemp("rig"), difficulty=4)
    rig.mine_blocks(rig.trainer(spec), 2)
    assert len(rig.blocks) >= 2, rig.rejected
    return rig, rig.blocks


UNCHECKED_BY_REEXECUTION = {"previous_commitment", "applied_updates_hash"}
"""History for peers: it does not feed the precursor, so changing it buys no nonce."""
CHECKED_BY_THE_CLAIM_RULE = {"ticket_id"}
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-45])
MESSAGE_FIELDS: dict[str, Callable[[Any], st.SearchStrategy[Any]]] = {
    "worker_index": lambda m: st.integers(0, 2**31),
    "workers": lambda m: st.integers(1, 64),
    "epoch": lambda m: st.integers(0, 2**31),
    "iteration": lambda m: st.integers(0, 2**31),
    "batch_hash": lambda m: st.binary(min_size=32, max_size=32),
    "checkpoint_hash": lambda m: st.binary(min_size=32, max_size=32),
    "ticket_id": lambda m: st.binary(min_size=32, max_size=32),
    "loss": lambda m: FLOATS,
    "correct": lambda m: st.integers(0, 2**31),
    "samples": lambda m: st.integers(1, 2**31),
    "start_sample": lambda m: st.binary(max_size=64) | st.just(m.start_sample[:-1]),
    "grad_sample": lambda m: (
        st.binary(max_size=64)
        | st.builds(lambda n: m.grad_sample[:n], st.integers(0, len(m.grad_sample) - 1))
        | st.just(m.grad_sample + b"\x00")
    ),
    "applied_updates_hash": lambda m: st.binary(min_size=32, max_size=32),
    "previous_commitment": lambda m: st.binary(min_size=32, max_size=32),
}


@fuzz_settings(120)
@given(data=st.data())
def test_reexecution_refuses_mutated_work_with_a_documented_reason(
    mined: tuple[Any, list[Block]], data: st.DataObject
) -> None:
    from pouw.blockchain.iteration_message import decode_iteration_message

    rig, blocks = mined
    block = blocks[data.draw(st.integers(0, len(blocks) - 1), label="block")]
    message = decode_iteration_message(block.iteration_message)
    fields = data.draw(
        st.lists(st.sampled_from(sorted(MESSAGE_FIELDS)), min_size=1, max_size=3, unique=True),
        label="fields",
    )
    changes = {name: data.draw(MESSAGE_FIELDS[name](message), label=name) for name in fields}
    mutated = msgspec.structs.replace(message, **changes)
    assume(mutated != message)
    checkpoint = block.checkpoint
    if data.draw(st.booleans(), label="checkpoint too"):
        cut = data.draw(st.integers(0, len(checkpoint)), label="cut")
        checkpoint = checkpoint[:cut] + data.draw(st.binary(max_size=16), label="junk")
    device = data.draw(st.sampled_from(["cpu", "cuda"]), label="device")
    forged = rig.reseal(block, mutated, checkpoint=checkpoint, device_class=device)
    try:
        rig.verifier.reexecute(forged)
    except InvalidBlock as refused:
        assert refused.reason in SEAL_REASONS, refused
        return
    # Accepted: only the history for peers (which leaves the precursor, and so the nonces, as
    # they were), or the ticket, which the claim rule checks against the chain.
    changed = {name for name in fields if getattr(mutated, name) != getattr(message, name)}
    assert changed <= UNCHECKED_BY_REEXECUTION | CHECKED_BY_THE_CLAIM_RULE, (changed, changes)
    if changed <= UNCHECKED_BY_REEXECUTION:
        assert mutated.precursor() == message.precursor()
