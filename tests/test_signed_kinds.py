"""Every signer signs as its own kind: a real signature of each kind (a transaction, a block, an
IT_RES, a batch, a final model, a verdict, an envelope, a hello's answer), presented as each
other kind, verifies as none of them (and `tests/test_crypto.py` shows the same for one body
signed as every kind)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from pouw.blockchain.block import Block, BlockHeader, sign_block
from pouw.blockchain.iteration_message import iteration_body, sign_iteration
from pouw.blockchain.transactions import Transfer, sign_transaction
from pouw.crypto import ZERO_HASH, KeyPair, SignedKind, sha256, verify_as
from pouw.network.messages import Ping, answer_challenge, challenge_body, open_frame, seal
from pouw.node.items import (
    BlockVerdict,
    FinalModel,
    IterationBatch,
    IterationRecord,
    sign_batch,
    sign_final_model,
    sign_verdict,
)
from tests.support.items import iteration_message

CHAIN = "pouw-test"
KEY = KeyPair.from_seed(b"signer")


class Signed(NamedTuple):
    signature: bytes
    body: bytes
    """What the signature covers, as its verifier computes it."""


def _transaction() -> Signed:
    tx = sign_transaction(KEY, Transfer(KEY.address, 1), nonce=0, fee=1, chain_id=CHAIN)
    return Signed(tx.signature, tx.txid())


def _block() -> Signed:
    header = BlockHeader(1, 1, ZERO_HASH, ZERO_HASH, 1, 1, 0, KEY.public_key, *[ZERO_HASH] * 3)
    block = sign_block(Block(header, ()), KEY, CHAIN)
    return Signed(block.signature, block.hash())


def _iteration() -> Signed:
    message = iteration_message(sha256(b"task"), KEY.public_key).encode()
    return Signed(
        sign_iteration(KEY, CHAIN, message, b"update"), iteration_body(message, b"update")
    )


def _batch() -> Signed:
    record = IterationRecord(b"message", b"update", bytes(64))
    batch = sign_batch(KEY, CHAIN, IterationBatch(KEY.public_key, (record,)))
    return Signed(batch.signature, batch.body())


def _final_model() -> Signed:
    final = FinalModel(sha256(b"task"), KEY.public_key, sha256(b"model"), b"model", 3)
    final = sign_final_model(KEY, CHAIN, final)
    return Signed(final.signature, final.body())


def _verdict() -> Signed:
    verdict = sign_verdict(KEY, CHAIN, BlockVerdict(sha256(b"block"), KEY.public_key, True))
    return Signed(verdict.signature, verdict.body())


def _envelope() -> Signed:
    envelope, _ = open_frame(seal(KEY, CHAIN, Ping(1, 2, ZERO_HASH, 3), 1), CHAIN, 1 << 20)
    return Signed(envelope.signature, envelope.signed_body())


def _hello_answer() -> Signed:
    recipient = KeyPair.from_seed(b"recipient").public_key
    answer = answer_challenge(KEY, CHAIN, bytes(32), recipient)
    return Signed(answer, challenge_body(bytes(32), recipient))


SIGNERS: dict[SignedKind, Callable[[], Signed]] = {
    SignedKind.TRANSACTION: _transaction,
    SignedKind.BLOCK: _block,
    SignedKind.ITERATION: _iteration,
    SignedKind.ITERATION_BATCH: _batch,
    SignedKind.FINAL_MODEL: _final_model,
    SignedKind.VERDICT: _verdict,
    SignedKind.ENVELOPE: _envelope,
    SignedKind.HELLO: _hello_answer,
}


def test_every_kind_has_a_signer() -> None:
    assert set(SIGNERS) == set(SignedKind)


@pytest.mark.parametrize("made_as", list(SignedKind))
@pytest.mark.parametrize("presented_as", list(SignedKind))
def test_a_real_signature_verifies_as_its_own_kind_only(
    made_as: SignedKind, presented_as: SignedKind
) -> None:
    signature, body = SIGNERS[made_as]()
    verified = verify_as(presented_as, CHAIN, KEY.public_key, signature, body)
    assert verified == (made_as == presented_as)
    assert not verify_as(made_as, "another-chain", KEY.public_key, signature, body)
