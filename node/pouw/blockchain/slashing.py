"""The SLASH rule: a ticket is confiscated only with proof that every node checks alike, at a
bounded cost (docs/protocol.md, section 9).

A proof is one of:

- **Equivocation**: two different statements of one kind, both signed as that kind by the
  ticket's key, about one slot, which no honest signer makes:
  - two IT_RES of the ticket for one (task, epoch, iteration) from one segment checkpoint whose
    precursors differ (re-running the segment gives one outcome; the update and the history
    fields may differ after an honest restart, so they do not count);
  - two final models of one task;
  - a verdict that passes a block and one that fails it for fake work;
  - two TASK_RESULT transactions for one task whose payloads differ.
- **FailedReexecution**: a block signed by the ticket's key whose iteration (of a task on this
  branch) fails re-execution for fake work: at most one block's segment, K iterations, from a
  checkpoint the size cap bounds.

Only an account holding a live ticket may report (so a stranger cannot make every node re-run
blocks for free); it is paid `slash_reporter_share_percent` of the stake. A ticket is slashed at
most once: it is gone after, so the same evidence cannot be replayed against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
from msgspec import Meta

from pouw.blockchain.block import decode_block, has_valid_block_signature, meets_difficulty
from pouw.blockchain.draw import Ticket
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.transactions import (
    FINAL_MODEL_TAG,
    Equivocation,
    EvidenceKind,
    FailedReexecution,
    Payload,
    SlashEvidence,
    Statement,
    TaskResult,
)
from pouw.crypto import HASH_SIZE, ZERO_HASH, SignedKind, canonical_bytes, sha256, verify_as
from pouw.errors import InvalidTransaction, MalformedData, Reason
from pouw.roles import NodeRole

if TYPE_CHECKING:
    from pouw.blockchain.block import Block
    from pouw.blockchain.state import LedgerState

ReexecutionCheck = Callable[["Block"], Reason | None]
"""Re-executes a block's iteration: the reason it fails, or None when it holds."""

VERDICT_TAG = b"pouw-verdict"
T = TypeVar("T")
_Hash = Annotated[bytes, Meta(min_length=HASH_SIZE, max_length=HASH_SIZE)]


class _FinalModelHead(msgspec.Struct, frozen=True, array_like=True):
    """The first fields of a final model's signed body (`final_model_body`); the fields after
    them (the model's hash and its bytes' hash) are its content."""

    tag: bytes
    task_id: _Hash
    miner: _Hash


class _VerdictBody(msgspec.Struct, frozen=True, array_like=True):
    """A verdict's signed body (`pouw.node.items.BlockVerdict.body`)."""

    tag: bytes
    block_hash: _Hash
    verifier: _Hash
    valid: bool
    reason: str


_final_model_head = msgspec.msgpack.Decoder(_FinalModelHead)
_verdict_body = msgspec.msgpack.Decoder(_VerdictBody)
_transaction_body = msgspec.msgpack.Decoder(tuple[Payload, bytes, int, int])


@dataclass(frozen=True)
class Claim:
    """What one signed statement says, read from its body."""

    signer: bytes
    slot: object
    content: object
    ticket_id: bytes | None = None
    """The ticket the statement names, where it names one (an IT_RES)."""


@dataclass(frozen=True)
class _Kind:
    signed_as: SignedKind
    role: NodeRole
    read: Callable[[bytes], Claim]
    signed_message: Callable[[bytes], bytes] = lambda body: body
    conflict: Callable[[object, object], bool] = lambda first, second: first != second


def _read_iteration(body: bytes) -> Claim:
    if len(body) <= HASH_SIZE:
        raise MalformedData("an IT_RES body is the message and the update's hash")
    message = decode_iteration_message(body[:-HASH_SIZE])
    if message.checkpoint_hash == ZERO_HASH:
        raise _NotProven("an IT_RES from a resumed segment names no checkpoint")
    slot = (
        message.task_id,
        message.ticket_id,
        message.epoch,
        message.iteration,
        message.checkpoint_hash,
    )
    return Claim(message.miner, slot, message.precursor(), message.ticket_id)


def _read_final_model(body: bytes) -> Claim:
    head = _decode(_final_model_head, body)
    if head.tag != FINAL_MODEL_TAG:
        raise MalformedData("not a final model's body")
    return Claim(head.miner, head.task_id, body)


def _read_verdict(body: bytes) -> Claim:
    verdict = _decode(_verdict_body, body)
    if verdict.tag != VERDICT_TAG:
        raise MalformedData("not a verdict's body")
    return Claim(verdict.verifier, verdict.block_hash, None if verdict.valid else verdict.reason)


def _verdicts_conflict(first: object, second: object) -> bool:
    """One verdict passes the block (None) and the other fails it for fake work: re-execution
    is bit-exact, so no honest verifier says both. Other refusals (a dataset missing, bytes a
    relay broke) may honestly turn into a pass."""
    failed = second if first is None else first if second is None else None
    return failed in _FAKE_WORK


_FAKE_WORK = frozenset(reason.value for reason in Reason if reason.fake_work)


def _read_task_result(body: bytes) -> Claim:
    payload, sender, _, _ = _decode(_transaction_body, body)
    if not isinstance(payload, TaskResult):
        raise MalformedData("not a task result transaction")
    return Claim(sender, payload.task_id, canonical_bytes(payload))


def _decode(decoder: msgspec.msgpack.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise MalformedData(str(error)) from None


KINDS: dict[EvidenceKind, _Kind] = {
    EvidenceKind.ITERATION: _Kind(SignedKind.ITERATION, NodeRole.MINER, _read_iteration),
    EvidenceKind.FINAL_MODEL: _Kind(SignedKind.FINAL_MODEL, NodeRole.MINER, _read_final_model),
    EvidenceKind.VERDICT: _Kind(
        SignedKind.VERDICT, NodeRole.VERIFIER, _read_verdict, conflict=_verdicts_conflict
    ),
    EvidenceKind.TASK_RESULT: _Kind(
        SignedKind.TRANSACTION, NodeRole.EVALUATOR, _read_task_result, signed_message=sha256
    ),
}
"""Per statement kind: the signature's kind, the role whose ticket it can cost, how its body
reads, what its signature covers (a transaction's: its id) and when two contents conflict."""


class _NotProven(Exception):
    pass


class SlashingRule:
    """Checks a SLASH against a ledger state; `reexecution` re-runs a block's iteration (None:
    failed re-execution is never proven, as on a ledger that re-executes nothing)."""

    def __init__(self, reexecution: ReexecutionCheck | None = None) -> None:
        self.reexecution = reexecution

    def check(self, slash: SlashEvidence, reporter: str, state: LedgerState) -> Ticket:
        """The ticket the evidence proves cheated, or InvalidTransaction with the rule."""
        ticket = state.tickets.get(slash.ticket_id)
        if ticket is None:
            raise InvalidTransaction(Reason.UNKNOWN_TICKET, slash.ticket_id.hex()[:16])
        if not any(t.owner == reporter for t in state.tickets.values()):
            raise InvalidTransaction(Reason.REPORTER_WITHOUT_TICKET, f"{reporter} holds no ticket")
        try:
            if isinstance(slash.proof, Equivocation):
                _check_equivocation(slash.proof, ticket, state.params.chain_id)
            else:
                self._check_failed_reexecution(slash.proof, ticket, state)
        except MalformedData as error:
            raise InvalidTransaction(Reason.MALFORMED_EVIDENCE, str(error)) from None
        except _NotProven as error:
            raise InvalidTransaction(Reason.EVIDENCE_NOT_PROVEN, str(error)) from None
        return ticket

    def _check_failed_reexecution(
        self, proof: FailedReexecution, ticket: Ticket, state: LedgerState
    ) -> None:
        block = decode_block(proof.block)
        header = block.header
        chain_id = state.params.chain_id
        if header.miner != ticket.public_key or not has_valid_block_signature(
            block, block.hash(), chain_id
        ):
            raise InvalidTransaction(
                Reason.BAD_EVIDENCE_SIGNATURE, "the block is not signed by the ticket's key"
            )
        if sha256(block.iteration_message) != header.iteration_hash:
            raise MalformedData("the block's IT_RES is not the one its header names")
        message = decode_iteration_message(block.iteration_message)
        _check_ticket(ticket, NodeRole.MINER, message.ticket_id)
        task = state.tasks.get(message.task_id)
        if task is None or task.status != "open":
            raise _NotProven(f"task {message.task_id.hex()[:16]} is not open on this branch")
        if not meets_difficulty(header.seal_hash(), header.difficulty):
            raise _NotProven("the block's seal does not meet its difficulty")
        if self.reexecution is None:
            raise _NotProven("this ledger re-executes no block")
        reason = self.reexecution(block)
        if reason is None or not reason.fake_work:
            raise _NotProven(f"re-execution shows no fake work ({reason or 'it holds'})")


def _check_equivocation(proof: Equivocation, ticket: Ticket, chain_id: str) -> None:
    kind = KINDS[proof.kind]
    _check_ticket(ticket, kind.role, None)
    first, second = (_signed_claim(kind, s, ticket, chain_id) for s in (proof.first, proof.second))
    for claim in (first, second):
        _check_ticket(ticket, kind.role, claim.ticket_id)
    if first.slot != second.slot:
        raise _NotProven("the statements are about different slots")
    if proof.first.body == proof.second.body or not kind.conflict(first.content, second.content):
        raise _NotProven("the statements do not conflict")


def _signed_claim(kind: _Kind, statement: Statement, ticket: Ticket, chain_id: str) -> Claim:
    key = ticket.public_key
    message = kind.signed_message(statement.body)
    if not verify_as(kind.signed_as, chain_id, key, statement.signature, message):
        raise InvalidTransaction(
            Reason.BAD_EVIDENCE_SIGNATURE,
            f"a statement not signed by the ticket's key as a {kind.signed_as}",
        )
    claim = kind.read(statement.body)
    if claim.signer != key:
        raise InvalidTransaction(Reason.EVIDENCE_WRONG_TICKET, "a statement names another signer")
    return claim


def _check_ticket(ticket: Ticket, role: NodeRole, named: bytes | None) -> None:
    if ticket.role != role:
        raise InvalidTransaction(
            Reason.EVIDENCE_WRONG_TICKET, f"the evidence costs a {role} ticket, not a {ticket.role}"
        )
    if named is not None and named != ticket.ticket_id:
        raise InvalidTransaction(Reason.EVIDENCE_WRONG_TICKET, "the IT_RES names another ticket")


def offender(slash: SlashEvidence) -> bytes | None:
    """The key a mined SLASH proved cheating (for reputation), when its evidence reads."""
    try:
        if isinstance(slash.proof, FailedReexecution):
            return decode_block(slash.proof.block).header.miner
        return KINDS[slash.proof.kind].read(slash.proof.first.body).signer
    except (MalformedData, _NotProven):
        return None
