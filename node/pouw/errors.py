"""The node's errors, under one root, and the reasons a block, a transaction or a gossiped item
is refused.

A refusal carries a `Reason`: a short machine-readable word (the metric label, the API's
`reason`) whose members say how the node treats it (`relay_may_cause`, `fake_work`), so that
behaviour never keys on strings compared in distant files.
"""

from __future__ import annotations

from enum import Enum, StrEnum, auto
from typing import Self


class PouwError(Exception):
    """The root of every error the node raises on purpose."""


class Trait(Enum):
    """How the node treats a refusal; a `Reason` member has the traits listed after its word."""

    RELAY_MAY_CAUSE = auto()
    FAKE_WORK = auto()


class Reason(StrEnum):
    relay_may_cause: bool
    """A gossiped transaction refused for this reason can come from an honest relay (a race
    with a block, a relay a block ahead or behind on tasks and tickets, a full mempool that
    evicted the transaction's predecessor): dropped, not held against the relay."""
    fake_work: bool
    """Re-execution shows the block claims work its start model and batch do not give: what a
    slash proves. Other block rejections are the seal's, or the verifier's own trouble."""

    def __new__(cls, value: str, *traits: Trait) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.relay_may_cause = Trait.RELAY_MAY_CAUSE in traits
        member.fake_work = Trait.FAKE_WORK in traits
        return member

    # -- transactions: signature, nonce and balance (pouw.blockchain.state, .mempool) ----------
    BAD_SIGNATURE = "bad_signature"
    DEVNET_KEY = "devnet_key"
    """Signed by a key derived from a public devnet name, on a chain that is not a devnet."""
    REPLAY = "replay", Trait.RELAY_MAY_CAUSE
    NONCE_GAP = "nonce_gap", Trait.RELAY_MAY_CAUSE
    OVERSPEND = "overspend"
    UNEXPECTED_REWARD = "unexpected_reward"
    BAD_REWARD = "bad_reward"
    # -- transactions: payload rules ------------------------------------------------------------
    ZERO_AMOUNT = "zero_amount"
    INVALID_TASK_SPEC = "invalid_task_spec"
    STAKE_BELOW_MINIMUM = "stake_below_minimum"
    UNKNOWN_TASK = "unknown_task", Trait.RELAY_MAY_CAUSE
    TASK_CLOSED = "task_closed", Trait.RELAY_MAY_CAUSE
    TASK_EXPIRED = "task_expired", Trait.RELAY_MAY_CAUSE
    """The task passed its deadline unsettled and was refunded to its client."""
    TASK_NOT_DRAWN = "task_not_drawn", Trait.RELAY_MAY_CAUSE
    NOT_AN_EVALUATOR = "not_an_evaluator", Trait.RELAY_MAY_CAUSE
    """The sender holds no live evaluator ticket drawn for the task."""
    RESULT_ALREADY_SENT = "result_already_sent", Trait.RELAY_MAY_CAUSE
    """The evaluator's result for the task is on chain already: one result per evaluator."""
    ALREADY_WITHDRAWN = "already_withdrawn", Trait.RELAY_MAY_CAUSE
    """The miner left the task already (WITHDRAW_FROM_TASK)."""
    NOT_DRAWN_MINER = "not_drawn_miner"
    """A ranking, or a final model, names a miner not drawn for the task (or since slashed)."""
    BAD_RANKING = "bad_ranking"
    MODEL_NOT_SIGNED = "model_not_signed"
    """A ranked model without its miner's signature over it (the FinalModel item's)."""
    UNKNOWN_TICKET = "unknown_ticket", Trait.RELAY_MAY_CAUSE
    NOT_A_VERIFIER = "not_a_verifier", Trait.RELAY_MAY_CAUSE
    REPORTER_WITHOUT_TICKET = "reporter_without_ticket", Trait.RELAY_MAY_CAUSE
    """A SLASH from an account that holds no live ticket (`pouw.blockchain.slashing`)."""
    MALFORMED_EVIDENCE = "malformed_evidence"
    BAD_EVIDENCE_SIGNATURE = "bad_evidence_signature"
    """A statement not signed by the ticket's key as the kind it is presented as."""
    EVIDENCE_WRONG_TICKET = "evidence_wrong_ticket"
    """The evidence is about another ticket, signer or role than the one slashed."""
    EVIDENCE_NOT_PROVEN = "evidence_not_proven"
    """The statements do not conflict, or the block's re-execution shows no fake work."""
    # -- blocks: the work claim against the branch's state (pouw.mining.claims) -----------------
    NOT_DRAWN = "not_drawn", Trait.FAKE_WORK
    """The block's miner holds no live MINER ticket drawn for the iteration's task and slot."""
    STALE_POSITION = "stale_position", Trait.FAKE_WORK
    """The ticket already sealed this position, or a later one, on the branch."""
    SEGMENT_FORK = "segment_fork", Trait.FAKE_WORK
    """Another checkpoint than the one the ticket's segment already committed to."""
    # -- the mempool's own ------------------------------------------------------------------------
    DUPLICATE = "duplicate", Trait.RELAY_MAY_CAUSE
    DUPLICATE_NONCE = "duplicate_nonce", Trait.RELAY_MAY_CAUSE
    TOO_MANY_PENDING = "too_many_pending", Trait.RELAY_MAY_CAUSE
    MEMPOOL_FULL = "mempool_full", Trait.RELAY_MAY_CAUSE
    # -- blocks: shape, size, merkle root, seal, signature (pouw.blockchain.validation) ---------
    BAD_VERSION = "bad_version"
    OVERSIZED_BLOCK = "oversized_block"
    OVERSIZED_CHECKPOINT = "oversized_checkpoint"
    MISSING_REWARD = "missing_reward"
    EXTRA_REWARD = "extra_reward"
    DUPLICATE_TRANSACTION = "duplicate_transaction"
    BAD_MERKLE_ROOT = "bad_merkle_root"
    BAD_ITERATION_HASH = "bad_iteration_hash"
    TARGET_NOT_MET = "target_not_met"
    BAD_BLOCK_SIGNATURE = "bad_block_signature"
    # -- blocks: the header in its chain ------------------------------------------------------
    WRONG_PREV_HASH = "wrong_prev_hash"
    WRONG_HEIGHT = "wrong_height"
    TIMESTAMP_OUT_OF_BOUNDS = "timestamp_out_of_bounds"
    WRONG_DIFFICULTY = "wrong_difficulty"
    REORG_TOO_DEEP = "reorg_too_deep"
    HASH_MISMATCH = "hash_mismatch"
    """`pouw chain verify`: a stored body that does not hash to its key."""
    # -- blocks: the PoUW seal every node checks (pouw.mining.verify) ---------------------------
    MALFORMED_ITERATION = "malformed_iteration"
    MINER_MISMATCH = "miner_mismatch"
    COMMITMENT_MISMATCH = "commitment_mismatch"
    PRECURSOR_MISMATCH = "precursor_mismatch"
    NONCE_OVER_BUDGET = "nonce_over_budget"
    NONCE_NOT_DERIVED = "nonce_not_derived"
    INEXACT_DEVICE = "inexact_device"
    """A device class whose results cannot be re-executed bit for bit (only `cpu` is exact)."""
    # -- blocks: re-execution, by every node ------------------------------------------------
    DATASET_UNAVAILABLE = "dataset_unavailable"
    UNRUNNABLE_TASK = "unrunnable_task"
    BAD_WORKER_INDEX = "bad_worker_index", Trait.FAKE_WORK
    BAD_POSITION = "bad_position", Trait.FAKE_WORK
    """An (epoch, iteration) outside the task's schedule."""
    BATCH_MISMATCH = "batch_mismatch", Trait.FAKE_WORK
    CHECKPOINT_MISMATCH = "checkpoint_mismatch", Trait.FAKE_WORK
    """Segment 0 of the IT_RES does not start from the task's initial model."""
    CHECKPOINT_BYTES = "checkpoint_bytes"
    """The bytes the block came with do not hash to its IT_RES's checkpoint_hash. The block
    hash does not cover them, so this is the sender's fault, not proof against the miner."""
    CORRUPT_MODEL = "corrupt_model", Trait.FAKE_WORK
    STALE_START_MODEL = "stale_start_model", Trait.FAKE_WORK
    LOSS_MISMATCH = "loss_mismatch", Trait.FAKE_WORK
    ACCURACY_MISMATCH = "accuracy_mismatch", Trait.FAKE_WORK
    UPDATE_MISMATCH = "update_mismatch", Trait.FAKE_WORK
    # -- gossiped items (pouw.node.intake) --------------------------------------------------------
    MALFORMED = "malformed"
    ID_MISMATCH = "id_mismatch"
    FOREIGN_ITERATION = "foreign_iteration"
    # -- byte budgets (pouw.budgets) --------------------------------------------------------------
    OVER_SENDER_BUDGET = "over_sender_budget"
    """The item's author already holds its share of the store's bytes."""
    MODEL_TOO_LARGE = "model_too_large"
    """A final model larger than its task's spec implies (its float32 parameters as
    safetensors, `pouw.budgets.final_model_bytes`)."""
    STORE_FULL = "store_full", Trait.RELAY_MAY_CAUSE
    """The store holds its total of bytes: refused, not held against the relay."""


class Rejected(PouwError):
    """A refusal: `reason` is the rule, `detail` the human sentence."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidTransaction(Rejected):
    pass


class InvalidBlock(Rejected):
    def __init__(self, reason: Reason, detail: str = "", height: int | None = None) -> None:
        super().__init__(reason, detail)
        self.height = height

    def __str__(self) -> str:
        where = f" at height {self.height}" if self.height is not None else ""
        return f"invalid block{where}: {super().__str__()}"


class ReorgTooDeep(Rejected):
    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(
            Reason.REORG_TOO_DEEP, f"a reorg of {depth} blocks exceeds the limit of {limit}"
        )
        self.depth = depth
        self.limit = limit


class MalformedData(PouwError, ValueError):
    """Bytes from outside that do not decode to the expected structure."""
