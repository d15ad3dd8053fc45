"""What nodes gossip besides blocks and transactions, each signed by its author.

- IterationRecord: a miner's IT_RES: the iteration message, its compressed update and the
  miner's signature over H(message || H(update)) (what Miner publishes). Supervisors keep them.
- FinalModel: a miner's model at the end of a task, for evaluators (safetensors); its signature
  covers the sha256 of the model bytes, so no relay can put other bytes under its id.
- BlockVerdict: a verifier's attestation that it re-executed a block and what it found.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from pouw.blockchain.transactions import final_model_body
from pouw.crypto import KeyPair, canonical_bytes, sha256, verify_signature
from pouw.errors import MalformedData

Hash = Annotated[bytes, Meta(min_length=32, max_length=32)]
PublicKey = Annotated[bytes, Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, Meta(max_length=64)]
MAX_MODEL_BYTES = 64 * 1024 * 1024


class IterationRecord(msgspec.Struct, frozen=True, array_like=True):
    message: Annotated[bytes, Meta(max_length=1 << 20)]
    update: Annotated[bytes, Meta(max_length=64 << 20)]
    signature: Signature

    def signed_digest(self) -> bytes:
        return sha256(self.message + sha256(self.update))

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
        digests = b"".join(record.signed_digest() for record in self.records)
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
            (b"pouw-verdict", self.block_hash, self.verifier, self.valid, self.reason)
        )

    def item_id(self) -> bytes:
        return sha256(self.body())


def sign_batch(key: KeyPair, batch: IterationBatch) -> IterationBatch:
    return msgspec.structs.replace(batch, signature=key.sign(batch.body()))


def sign_final_model(key: KeyPair, model: FinalModel) -> FinalModel:
    return msgspec.structs.replace(model, signature=key.sign(model.body()))


def sign_verdict(key: KeyPair, verdict: BlockVerdict) -> BlockVerdict:
    return msgspec.structs.replace(verdict, signature=key.sign(verdict.body()))


def has_valid_signature(
    item: IterationRecord | IterationBatch | FinalModel | BlockVerdict, author: bytes
) -> bool:
    body = item.signed_digest() if isinstance(item, IterationRecord) else item.body()
    return verify_signature(author, item.signature, body)


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
