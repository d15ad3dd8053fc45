"""Bodies and responses of the HTTP API (pydantic), so bad input becomes a 422 naming the field
and /docs shows every shape.

The task body mirrors `pouw.spec.TaskSpec` field for field, bounds and defaults included
(tests/test_task_spec_contract.py keeps them in step): pydantic names the field in its 422, and
`task_spec_from_mapping` still has the last word on the spec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pouw.node.views import TaskPhase
from pouw.roles import NodeRole
from pouw.spec import DEFAULT_FEE

# NaN and infinities are not amounts (json.loads would accept `Infinity`).
_BODY = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_COINS = 1e12


Size = Annotated[int, Field(ge=1, le=2**31)]
"""A layer's width or an input dimension (in the OpenAPI document too, for clients)."""


class ModelBody(BaseModel):
    model_config = _BODY
    layers: list[Size] = Field(min_length=2, max_length=16)
    architecture: Literal["mlp", "cnn"] = "mlp"
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"
    input_shape: list[Size] = Field(default=[], max_length=3)


class DatasetBody(BaseModel):
    model_config = _BODY
    name: str = Field(min_length=1, max_length=256)
    format: Literal["builtin", "npz", "csv"] = "builtin"
    url: str = Field(default="", max_length=2048)
    sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0, le=2**32)
    rows: int = Field(default=0, ge=0, le=2**31)
    features: int = Field(default=0, ge=0, le=2**31)
    classes: int = Field(default=0, ge=0, le=2**31)


class TaskBody(BaseModel):
    """A task spec (`pouw.spec.TaskSpec`) and what the client pays for it."""

    model_config = _BODY
    model: ModelBody
    dataset: DatasetBody
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    batch_size: int = Field(default=100, ge=1, le=2**31)
    epochs: int = Field(default=10, ge=1, le=10_000)
    tau: float = Field(default=0.0, ge=0.0)
    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    miners: int = Field(default=3, ge=1, le=64)
    aggregator: Literal["robust", "screened_mean", "median", "trimmed_mean", "krum", "mean"] = (
        "robust"
    )
    reward: float = Field(gt=0.0, le=MAX_COINS, description="coins paid into the task's escrow")
    fee: float = Field(default=DEFAULT_FEE, ge=0.0, le=MAX_COINS, description="coins to the miner")
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="idempotency key: a repeated id returns the first submission's task id",
    )

    def spec_mapping(self) -> dict[str, Any]:
        return self.model_dump(exclude={"reward", "fee", "request_id"})


class StakeBody(BaseModel):
    model_config = _BODY
    amount: float = Field(gt=0.0, le=MAX_COINS, description="coins locked in the ticket")
    role: NodeRole | None = Field(default=None, description="defaults to the node's role")
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="idempotency key: a repeated id returns the first purchase's ticket",
    )

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value


class Created(BaseModel):
    task_id: str


class MinerProgressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    miner: str
    epoch: int
    iterations: int
    loss: float | None
    accuracy: float | None
    finished: bool


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    task_id: str
    phase: TaskPhase
    client: str
    reward: float
    epochs: int
    dataset: str
    min_accuracy: float
    created_height: int | None
    miners: list[str]
    progress: list[MinerProgressOut]
    blocks: int
    test_accuracy: float | None
    best_model_hash: str | None
    model_available: bool
    message: str
    ranking: list[str] = []


MAX_TRANSACTION_HEX = 2 * 64 * 1024


class TransactionBody(BaseModel):
    """A transaction signed elsewhere (a faucet's transfer), as the wire encodes it, in hex."""

    model_config = _BODY
    transaction: str = Field(
        min_length=2, max_length=MAX_TRANSACTION_HEX, pattern="^([0-9a-f]{2})+$"
    )


class Relayed(BaseModel):
    txid: str


class AccountOut(BaseModel):
    """An account as of this node's tip; `next_nonce` counts its transactions pending here."""

    address: str
    balance: float
    locked: float
    nonce: int
    next_nonce: int


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ticket_id: str
    role: str
    amount: float
    owner: str
    confirmed: bool


class BlockTransactionOut(BaseModel):
    txid: str
    kind: str
    fee: float


class AttestationOut(BaseModel):
    """One verifier's verdict on the block: from a live VERIFIER ticket, and on a client task's
    block from a verifier drawn for that task."""

    verifier: str = Field(description="the verifier's address")
    valid: bool
    reason: str = Field(description="the rule the block broke, empty when valid")


class BlockOut(BaseModel):
    height: int
    hash: str
    prev_hash: str
    timestamp_ms: int
    difficulty: int
    nonce: int
    miner: str
    task_id: str
    transactions: list[BlockTransactionOut]
    checkpoint_bytes: int
    attestations: list[AttestationOut] = Field(
        description="one per verifier that may attest the block, ordered by address"
    )
    verified: bool | None = Field(
        description="None without attestations; False when any says invalid; else True"
    )


class HealthOut(BaseModel):
    """response_time in ms (mean of recent requests), success_rate in [0, 1], usage in %."""

    model_config = ConfigDict(from_attributes=True)
    response_time: float
    success_rate: float
    cpu_usage: float
    memory_usage: float
    healthy: bool


class Problem(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None


class Invalid(BaseModel):
    """422: the fields that failed validation, each named by `loc`; or, for a task id or a
    task spec that breaks a rule no field schema expresses, a message."""

    detail: list[FieldProblem] | str


class Refused(BaseModel):
    """The ledger refused the transaction: `reason` is the rule (a metric label)."""

    reason: str
    detail: str
