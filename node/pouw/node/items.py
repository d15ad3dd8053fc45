"""What nodes gossip besides blocks and transactions, each signed by its author.

- IterationRecord: a miner's IT_RES: the iteration message, its compressed update and the
  miner's signature over message || H(update) as an ITERATION (what Miner publishes).
  Supervisors keep them.
- FinalModel: a miner's model at the end of a task, for evaluators (safetensors); its signature
  covers the sha256 of the model bytes, so no relay can put other bytes under its id.
- BlockVerdict: a verifier's attestation that it re-executed a block and what it found.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from pouw.blockchain.iteration_message import iteration_body
from pouw.blockchain.slashing import VERDICT_TAG
from pouw.blockchain.transactions import final_model_body
from pouw.crypto import KeyPair, SignedKind, canonical_bytes, sha256, verify_as
from pouw.errors import MalformedData

Hash = Annotated[bytes, Meta(min_length=32, max_length=32)]
PublicKey = Annotated[bytes, Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, Meta(max_length=64)]
MAX_MODEL_BYTES = 64 * 1024 * 1024


class IterationRecord(msgspec.Struct, frozen=True, array_like=True):
    message: Annotated[bytes, Meta(max_length=1 << 20)]
    update: Annotated[bytes, Meta(max_length=64 << 20)]
    signature: Signature

    def signed_body(self) -> bytes:
        return iteration_body(self.message, self.update)

    def item_id(self) -> bytes:
        return sha256(self.message)


class IterationBatch(msgspec.Struct, frozen=True, array_like=True):
    """A miner's IT_RES messages of the last moment, gossiped together and signed once:
    a small model runs hundreds of iterations a second, and a signature check per
    iteration at every node would cost more than the training. Each record keeps its own
    signature, which is what slashing evidence needs."""

    miner: PublicKey
    records: Annotated[tuple[IterationRecord, ...], Meta(max_length=4096)]
    signature: Signature = b""

    def body(self) -> bytes:
        digests = b"".join(sha256(record.signed_body()) for record in self.records)
        return canonical_bytes((b"pouw-iterations", self.miner, sha256(digests)))

    def item_id(self) -> bytes:
        return sha256(self.body())


class FinalModel(msgspec.Struct, frozen=True, array_like=True):
    task_id: Hash
    miner: PublicKey
    model_hash: Hash
    model: Annotated[bytes, Meta(max_length=MAX_MODEL_BYTES)]
    iterations: int
    signature: Signature = b""

    def body(self) -> bytes:
        return final_model_body(self.task_id, self.miner, self.model_hash, sha256(self.model))

    def item_id(self) -> bytes:
        return sha256(self.body())


class BlockVerdict(msgspec.Struct, frozen=True, array_like=True):
    block_hash: Hash
    verifier: PublicKey
    valid: bool
    reason: Annotated[str, Meta(max_length=64)] = ""
    signature: Signature = b""

    def body(self) -> bytes:
        return canonical_bytes(
            (VERDICT_TAG, self.block_hash, self.verifier, self.valid, self.reason)
        )

    def item_id(self) -> bytes:
        return sha256(self.body())


SignedItem = IterationRecord | IterationBatch | FinalModel | BlockVerdict
KIND_OF: dict[type[SignedItem], SignedKind] = {
    IterationRecord: SignedKind.ITERATION,
    IterationBatch: SignedKind.ITERATION_BATCH,
    FinalModel: SignedKind.FINAL_MODEL,
    BlockVerdict: SignedKind.VERDICT,
}


def sign_batch(key: KeyPair, chain_id: str, batch: IterationBatch) -> IterationBatch:
    signature = key.sign_as(SignedKind.ITERATION_BATCH, chain_id, batch.body())
    return msgspec.structs.replace(batch, signature=signature)


def sign_final_model(key: KeyPair, chain_id: str, model: FinalModel) -> FinalModel:
    signature = key.sign_as(SignedKind.FINAL_MODEL, chain_id, model.body())
    return msgspec.structs.replace(model, signature=signature)


def sign_verdict(key: KeyPair, chain_id: str, verdict: BlockVerdict) -> BlockVerdict:
    signature = key.sign_as(SignedKind.VERDICT, chain_id, verdict.body())
    return msgspec.structs.replace(verdict, signature=signature)


def has_valid_signature(item: SignedItem, author: bytes, chain_id: str) -> bool:
    body = item.signed_body() if isinstance(item, IterationRecord) else item.body()
    return verify_as(KIND_OF[type(item)], chain_id, author, item.signature, body)


def encode_item(item: IterationRecord | IterationBatch | FinalModel | BlockVerdict) -> bytes:
    return canonical_bytes(item)


_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(kind)
    for kind in (IterationRecord, IterationBatch, FinalModel, BlockVerdict)
}


Item = TypeVar("Item", IterationRecord, IterationBatch, FinalModel, BlockVerdict)


def decode_item(kind: type[Item], data: bytes) -> Item:
    try:
        return _decoders[kind].decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise MalformedData(f"malformed {kind.__name__}: {error}") from None
