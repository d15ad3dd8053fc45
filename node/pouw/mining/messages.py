"""The iteration message (IT_RES) a miner publishes after each iteration, and the commitments
derived from it.

    commitment_t = H(commitment_t-1 || H(grad_sample) || applied_updates_hash || batch_hash)
    precursor_t  = H(commitment_t || H(grad_sample || applied_updates_hash))

The commitment chains the miner's iterations together cheaply (no full model hash per
iteration); the precursor is what the iteration's nonces are derived from.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from pouw.blockchain.transactions import Hash, PublicKey
from pouw.crypto import canonical_bytes, hash_concat, sha256
from pouw.errors import MalformedData

SAMPLE_BYTES_LIMIT = 64 * 1024
Count = Annotated[int, Meta(ge=0, le=2**31)]


class IterationMessage(msgspec.Struct, frozen=True, array_like=True):
    task_id: Hash
    miner: PublicKey
    worker_index: Count
    workers: Annotated[int, Meta(ge=1, le=64)]
    epoch: Count
    iteration: Count
    batch_hash: Hash
    loss: float
    correct: Count
    samples: Annotated[int, Meta(ge=1, le=2**31)]
    start_sample: Annotated[bytes, Meta(max_length=SAMPLE_BYTES_LIMIT)]
    grad_sample: Annotated[bytes, Meta(max_length=SAMPLE_BYTES_LIMIT)]
    applied_updates_hash: Hash
    previous_commitment: Hash
    peer_message_ids: Annotated[tuple[Hash, ...], Meta(max_length=64)] = ()
    version: int = 1

    def encode(self) -> bytes:
        return canonical_bytes(self)

    def commitment(self) -> bytes:
        return hash_concat(
            self.previous_commitment,
            sha256(self.grad_sample),
            self.applied_updates_hash,
            self.batch_hash,
        )

    def precursor(self) -> bytes:
        return hash_concat(self.commitment(), sha256(self.grad_sample + self.applied_updates_hash))


_decoder = msgspec.msgpack.Decoder(IterationMessage)


def decode_iteration_message(data: bytes) -> IterationMessage:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise MalformedData(f"malformed iteration message: {error}") from None


NO_UPDATES_HASH = sha256(b"")
"""applied_updates_hash of an iteration that applied no peer updates."""


def initial_commitment(task_id: bytes, miner: bytes) -> bytes:
    return hash_concat(b"pouw-commitment", task_id, miner)
