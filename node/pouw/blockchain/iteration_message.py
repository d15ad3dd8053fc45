"""The iteration message (IT_RES) a miner publishes after each iteration, and the precursor
its nonces are derived from.

    precursor = H("pouw-precursor" || canonical(task, miner, ticket, worker slot, position,
                  checkpoint_hash, batch_hash, loss, correct, samples,
                  H(start_sample), H(grad_sample)))

Every input of the precursor is either fixed by the chain (the task, the miner's drawn ticket
and slot, a position that only moves forward, the segment's checkpoint) or recomputed when the
iteration is re-executed (the batch and every output). `previous_commitment`,
`applied_updates_hash` and `peer_message_ids` describe the miner's history for its peers; no
node can check them at bounded cost, so they do not feed the nonces.
"""

from __future__ import annotations

import struct
from typing import Annotated

import msgspec
from msgspec import Meta

from pouw.blockchain.transactions import Hash, PublicKey
from pouw.crypto import KeyPair, SignedKind, canonical_bytes, hash_concat, sha256
from pouw.errors import MalformedData

SAMPLE_BYTES_LIMIT = 64 * 1024
Count = Annotated[int, Meta(ge=0, le=2**31)]


class IterationMessage(msgspec.Struct, frozen=True, array_like=True):
    task_id: Hash
    miner: PublicKey
    ticket_id: Hash
    """The miner's MINER ticket that was drawn for the task (any live one: bootstrap task)."""
    worker_index: Count
    workers: Annotated[int, Meta(ge=1, le=64)]
    epoch: Count
    iteration: Count
    checkpoint_hash: Hash
    """H(checkpoint bytes) of the model and optimizer at the start of this iteration's
    segment (`pouw.mining.segments`): re-execution starts there."""
    batch_hash: Hash
    loss: float
    correct: Count
    samples: Annotated[int, Meta(ge=1, le=2**31)]
    start_sample: Annotated[bytes, Meta(max_length=SAMPLE_BYTES_LIMIT)]
    grad_sample: Annotated[bytes, Meta(max_length=SAMPLE_BYTES_LIMIT)]
    applied_updates_hash: Hash
    previous_commitment: Hash
    peer_message_ids: Annotated[tuple[Hash, ...], Meta(max_length=64)] = ()
    version: int = 2

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
        bound = (
            self.task_id,
            self.miner,
            self.ticket_id,
            self.worker_index,
            self.workers,
            self.epoch,
            self.iteration,
            self.checkpoint_hash,
            self.batch_hash,
            struct.pack("<d", self.loss),
            self.correct,
            self.samples,
            sha256(self.start_sample),
            sha256(self.grad_sample),
        )
        return sha256(b"pouw-precursor" + canonical_bytes(bound))


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


def iteration_body(message: bytes, update: bytes) -> bytes:
    """What an IT_RES signature covers (as `SignedKind.ITERATION`): the encoded message and the
    hash of its update. Slashing evidence carries this body (`pouw.blockchain.slashing`)."""
    return message + sha256(update)


def sign_iteration(key: KeyPair, chain_id: str, message: bytes, update: bytes) -> bytes:
    """The miner's signature of one IT_RES."""
    return key.sign_as(SignedKind.ITERATION, chain_id, iteration_body(message, update))
