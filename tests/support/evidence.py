"""Signed statements and slashing evidence as honest (or cheating) signers make them."""

from __future__ import annotations

import msgspec

from pouw.blockchain.iteration_message import IterationMessage, iteration_body
from pouw.blockchain.transactions import (
    Equivocation,
    EvidenceKind,
    RankedModel,
    Statement,
    TaskResult,
    Transaction,
)
from pouw.crypto import KeyPair, SignedKind, sha256
from pouw.node.items import BlockVerdict, FinalModel, sign_final_model, sign_verdict
from tests.support.items import iteration_message
from tests.support.ledger import signed

CHAIN = "pouw-devnet"


def iteration_statement(key: KeyPair, message: IterationMessage, update: bytes = b"") -> Statement:
    body = iteration_body(message.encode(), update)
    return Statement(body, key.sign_as(SignedKind.ITERATION, CHAIN, body))


def verdict_statement(key: KeyPair, block_hash: bytes, valid: bool, reason: str = "") -> Statement:
    verdict = sign_verdict(key, CHAIN, BlockVerdict(block_hash, key.public_key, valid, reason))
    return Statement(verdict.body(), verdict.signature)


def final_model_statement(
    key: KeyPair, task_id: bytes, model: bytes, model_hash: bytes | None = None
) -> Statement:
    """`key`'s signed final model of the task: `model`'s bytes, under `model_hash` (by default
    the bytes' hash)."""
    digest = sha256(model) if model_hash is None else model_hash
    final = FinalModel(task_id, key.public_key, digest, model, iterations=10)
    final = sign_final_model(key, CHAIN, final)
    return Statement(final.body(), final.signature)


def task_result_tx(key: KeyPair, task_id: bytes, accuracy: float, nonce: int) -> Transaction:
    """`key`'s TASK_RESULT ranking one model (the model's own signature is not what slashing
    checks: the transaction's is)."""
    miner = KeyPair.from_seed(b"a ranked miner")
    ranking = (RankedModel(miner.address, sha256(b"model"), accuracy, sha256(b"bytes"), bytes(64)),)
    return signed(key, TaskResult(task_id, ranking), nonce)


def transaction_statement(tx: Transaction) -> Statement:
    return Statement(tx.body_bytes(), tx.signature)


def it_res(key: KeyPair, ticket_id: bytes, task_id: bytes, **changes: object) -> IterationMessage:
    return iteration_message(task_id, key.public_key, ticket_id=ticket_id, **changes)


def equivocation(
    key: KeyPair, ticket_id: bytes, task_id: bytes, kind: EvidenceKind
) -> Equivocation:
    """Two conflicting statements of `kind` by `key` (its ticket `ticket_id`) on one slot."""
    if kind == EvidenceKind.ITERATION:
        message = it_res(key, ticket_id, task_id)
        other = msgspec.structs.replace(message, loss=message.loss + 1.0)
        pair = (iteration_statement(key, message), iteration_statement(key, other))
    elif kind == EvidenceKind.FINAL_MODEL:
        pair = (
            final_model_statement(key, task_id, b"one model"),
            final_model_statement(key, task_id, b"another model"),
        )
    elif kind == EvidenceKind.VERDICT:
        block_hash = sha256(b"a block")
        pair = (
            verdict_statement(key, block_hash, True),
            verdict_statement(key, block_hash, False, "loss_mismatch"),
        )
    else:
        pair = (
            transaction_statement(task_result_tx(key, task_id, 0.9, nonce=5)),
            transaction_statement(task_result_tx(key, task_id, 0.8, nonce=6)),
        )
    return Equivocation(kind, *pair)
