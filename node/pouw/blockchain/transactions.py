"""Transactions: typed payloads inside one signed envelope.

A transaction's id is the hash of its unsigned body; the signature covers the id as a
`SignedKind.TRANSACTION` on its chain, so a transaction cannot be replayed on another chain.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from pouw.crypto import (
    HASH_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    KeyPair,
    SignedKind,
    address_of,
    canonical_bytes,
    sha256,
    verify_as,
)
from pouw.errors import MalformedData
from pouw.roles import NodeRole
from pouw.spec import TaskSpec

COIN: Final = 1_000_000
"""Base units per coin. Amounts in consensus data are integers of base units."""

MAX_AMOUNT: Final = 2**62

Amount = Annotated[int, Meta(ge=0, le=MAX_AMOUNT)]
Hash = Annotated[bytes, Meta(min_length=HASH_SIZE, max_length=HASH_SIZE)]
Address = Annotated[str, Meta(pattern="^pw[0-9a-f]{40}$")]
PublicKey = Annotated[bytes, Meta(min_length=PUBLIC_KEY_SIZE, max_length=PUBLIC_KEY_SIZE)]
Signature = Annotated[bytes, Meta(max_length=SIGNATURE_SIZE)]
ShortText = Annotated[str, Meta(max_length=256)]
MAX_STATEMENT_BYTES: Final = 1 << 20
"""A statement (or a block) presented as slashing evidence, checkpoint included."""


def coins(amount: float) -> int:
    """Convert a human amount (the seed API's floats) to base units."""
    return round(amount * COIN)


class Transfer(msgspec.Struct, frozen=True, array_like=True, tag="transfer"):
    recipient: Address
    amount: Amount


class PayForTask(msgspec.Struct, frozen=True, array_like=True, tag="pay_for_task"):
    """A client pays `reward` into escrow for training `spec`; the task id is this tx's id."""

    spec: TaskSpec
    reward: Amount


class BuyTicket(msgspec.Struct, frozen=True, array_like=True, tag="buy_ticket"):
    """Stake `amount` for a role; the ticket id is this tx's id."""

    role: NodeRole
    amount: Amount
    preferences: Annotated[dict[ShortText, ShortText], Meta(max_length=32)] = {}


class Payout(msgspec.Struct, frozen=True, array_like=True):
    recipient: Address
    amount: Amount


class RankedModel(msgspec.Struct, frozen=True, array_like=True):
    """A drawn miner's final model as an evaluator ranked it, with the miner's own signature
    over it (its FinalModel item's, over `final_model_body`), so every node checks that the
    ranked model is one the miner handed in."""

    miner: Address
    model_hash: Hash
    accuracy: Annotated[float, Meta(ge=0.0, le=1.0)]
    bytes_hash: Hash
    """sha256 of the model's bytes (safetensors)."""
    signature: Signature


FINAL_MODEL_TAG: Final = b"pouw-final-model"


def final_model_body(task_id: bytes, miner: bytes, model_hash: bytes, bytes_hash: bytes) -> bytes:
    """What a miner signs, as a `SignedKind.FINAL_MODEL`, for its final model of a task: its hash
    and the hash of its bytes. The first three fields (tag, task, miner) are the slot slashing
    reads (`pouw.blockchain.slashing`): two different bodies for one slot are equivocation."""
    return canonical_bytes((FINAL_MODEL_TAG, task_id, miner, model_hash, bytes_hash))


class TaskResult(msgspec.Struct, frozen=True, array_like=True, tag="task_result"):
    """A drawn evaluator's ranking of a task's final models. It carries no payouts: once a
    majority of the drawn evaluators agree, the ledger splits the escrow itself
    (`pouw.blockchain.settlement`)."""

    task_id: Hash
    ranking: Annotated[tuple[RankedModel, ...], Meta(max_length=256)]


class EvidenceKind(StrEnum):
    """The statements whose conflicting pairs prove a key cheated (`pouw.blockchain.slashing`)."""

    ITERATION = "iteration"
    FINAL_MODEL = "final_model"
    VERDICT = "verdict"
    TASK_RESULT = "task_result"


class Statement(msgspec.Struct, frozen=True, array_like=True):
    """A signed statement as its signer signed it: the body of its kind and the signature."""

    body: Annotated[bytes, Meta(max_length=MAX_STATEMENT_BYTES)]
    signature: Signature


class Equivocation(msgspec.Struct, frozen=True, array_like=True, tag="equivocation"):
    """Two different statements of one kind by one key for the same slot."""

    kind: EvidenceKind
    first: Statement
    second: Statement


class FailedReexecution(msgspec.Struct, frozen=True, array_like=True, tag="failed_reexecution"):
    """A block signed by the ticket's key whose iteration fails re-execution: the encoded
    block (its transactions may be left out; the header still commits to them)."""

    block: Annotated[bytes, Meta(max_length=MAX_STATEMENT_BYTES)]


class SlashEvidence(msgspec.Struct, frozen=True, array_like=True, tag="slash"):
    """Proof that a ticket's key cheated, which every node checks (`pouw.blockchain.slashing`)."""

    ticket_id: Hash
    proof: Equivocation | FailedReexecution


class Reward(msgspec.Struct, frozen=True, array_like=True, tag="reward"):
    """The block reward plus fees; only ever the first transaction of a block, unsigned."""

    recipient: Address
    amount: Amount


class WithdrawFromTask(msgspec.Struct, frozen=True, array_like=True, tag="withdraw_from_task"):
    """A drawn miner leaves a task its training failed on, saying why. When every drawn miner
    has left (or lost its ticket), the escrow goes back to the client at once."""

    task_id: Hash
    reason: ShortText


Payload = Transfer | PayForTask | BuyTicket | TaskResult | WithdrawFromTask | SlashEvidence | Reward


class Transaction(msgspec.Struct, frozen=True, array_like=True):
    payload: Payload
    sender: Annotated[bytes, Meta(max_length=PUBLIC_KEY_SIZE)]
    nonce: Amount
    fee: Amount
    signature: Signature = b""

    @property
    def kind(self) -> str:
        return type(self.payload).__struct_config__.tag  # type: ignore[return-value]

    @property
    def sender_address(self) -> str:
        return address_of(self.sender)

    def body_bytes(self) -> bytes:
        return canonical_bytes((self.payload, self.sender, self.nonce, self.fee))

    def txid(self) -> bytes:
        return sha256(self.body_bytes())

    def has_valid_signature(self, chain_id: str, txid: bytes | None = None) -> bool:
        txid = txid if txid is not None else self.txid()
        return verify_as(SignedKind.TRANSACTION, chain_id, self.sender, self.signature, txid)


def sign_transaction(
    key: KeyPair, payload: Payload, *, nonce: int, fee: int, chain_id: str
) -> Transaction:
    unsigned = Transaction(payload=payload, sender=key.public_key, nonce=nonce, fee=fee)
    signature = key.sign_as(SignedKind.TRANSACTION, chain_id, unsigned.txid())
    return msgspec.structs.replace(unsigned, signature=signature)


def reward_transaction(recipient: str, amount: int, height: int) -> Transaction:
    """The unsigned first transaction of a block; the height makes every reward's id unique."""
    return Transaction(
        payload=Reward(recipient=recipient, amount=amount), sender=b"", nonce=height, fee=0
    )


_tx_decoder = msgspec.msgpack.Decoder(Transaction)


def encode_transaction(tx: Transaction) -> bytes:
    return canonical_bytes(tx)


def decode_transaction(data: bytes) -> Transaction:
    try:
        return _tx_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise MalformedData(f"malformed transaction: {error}") from None
