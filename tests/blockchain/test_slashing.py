"""The SLASH rule (pouw.blockchain.slashing): each proof every node checks confiscates; every
attack of the issue (anything else the owner signed, presented as evidence) is refused with its
reason; a ticket is slashed once."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from tests.support.evidence import (
    CHAIN,
    equivocation,
    final_model_statement,
    it_res,
    iteration_statement,
    task_result_tx,
    transaction_statement,
    verdict_statement,
)
from tests.support.ledger import BOB, CAROL, EVALUATOR, VERIFIER, ledger_params, signed

from pouw.blockchain.block import Block, BlockHeader, encode_block, sign_block
from pouw.blockchain.slashing import offender
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import (
    COIN,
    BuyTicket,
    Equivocation,
    EvidenceKind,
    FailedReexecution,
    PayForTask,
    SlashEvidence,
    Statement,
    Transaction,
)
from pouw.crypto import ZERO_HASH, KeyPair, SignedKind, sha256
from pouw.errors import InvalidTransaction, Reason
from pouw.network.messages import Hello, challenge_body, open_frame, seal
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

TASK = sha256(b"a task")
DIGITS = TaskSpec(model=ModelSpec(layers=(64, 32, 10)), dataset=DatasetSpec(name="digits"))
ROLE_OF = {
    EvidenceKind.ITERATION: NodeRole.MINER,
    EvidenceKind.FINAL_MODEL: NodeRole.MINER,
    EvidenceKind.VERDICT: NodeRole.VERIFIER,
    EvidenceKind.TASK_RESULT: NodeRole.EVALUATOR,
}
SIGNED_AS = {
    EvidenceKind.ITERATION: SignedKind.ITERATION,
    EvidenceKind.FINAL_MODEL: SignedKind.FINAL_MODEL,
    EvidenceKind.VERDICT: SignedKind.VERDICT,
    EvidenceKind.TASK_RESULT: SignedKind.TRANSACTION,
}
Proof = Equivocation | FailedReexecution
Reexecution = Callable[[Block], Reason | None]


class Ledger:
    """A ledger state with BOB's tickets of every role and a ticket for the reporter."""

    def __init__(self, reexecution: Reexecution | None = None) -> None:
        self.state = LedgerState.genesis(ledger_params(), reexecution)
        self.nonces: dict[str, int] = {}
        self.tickets = {
            role: self.apply(BOB, BuyTicket(role, 10 * self.state.params.min_stake)).txid()
            for role in (NodeRole.MINER, NodeRole.VERIFIER, NodeRole.EVALUATOR)
        }
        self.apply(VERIFIER, BuyTicket(NodeRole.VERIFIER, self.state.params.min_stake))

    def apply(self, key: KeyPair, payload: object) -> Transaction:
        nonce = self.nonces.get(key.address, 0)
        tx = signed(key, payload, nonce)  # type: ignore[arg-type]
        with self.state.tracking():
            self.state.apply_transaction(tx, tx.txid(), height=1)
        self.nonces[key.address] = nonce + 1
        return tx

    def slash(self, ticket_id: bytes, proof: Proof) -> None:
        self.apply(VERIFIER, SlashEvidence(ticket_id, proof))

    def refusal(
        self,
        ticket_id: bytes,
        proof: Equivocation | FailedReexecution,
        reporter: KeyPair = VERIFIER,
    ) -> str:
        with pytest.raises(InvalidTransaction) as caught:
            self.apply(reporter, SlashEvidence(ticket_id, proof))
        return caught.value.reason


@pytest.mark.parametrize("kind", list(EvidenceKind))
def test_each_kind_of_equivocation_confiscates_the_stake_once(kind: EvidenceKind) -> None:
    ledger = Ledger()
    for _ in range(2):  # a second ticket of the role is slashed on its own
        ticket_id = ledger.apply(BOB, BuyTicket(ROLE_OF[kind], 5 * COIN)).txid()
        stake = ledger.state.tickets[ticket_id].amount
        locked, reporter = (ledger.state.account(a) for a in (BOB.address, VERIFIER.address))
        proof = equivocation(BOB, ticket_id, TASK, kind)
        ledger.slash(ticket_id, proof)
        assert ticket_id not in ledger.state.tickets
        assert ledger.state.account(BOB.address).locked == locked.locked - stake
        share = stake * ledger.state.params.slash_reporter_share_percent // 100
        assert ledger.state.balance(VERIFIER.address) == reporter.balance - 10 + share
        assert ledger.refusal(ticket_id, proof) == Reason.UNKNOWN_TICKET  # no replay


@pytest.mark.parametrize("kind", list(EvidenceKind))
def test_the_same_statement_twice_is_not_evidence(kind: EvidenceKind) -> None:
    ledger = Ledger()
    proof = equivocation(BOB, ledger.tickets[ROLE_OF[kind]], TASK, kind)
    twice = msgspec.structs.replace(proof, second=proof.first)
    assert ledger.refusal(ledger.tickets[ROLE_OF[kind]], twice) == Reason.EVIDENCE_NOT_PROVEN


def test_statements_about_different_slots_are_not_evidence() -> None:
    ledger = Ledger()
    miner, verifier = ledger.tickets[NodeRole.MINER], ledger.tickets[NodeRole.VERIFIER]
    honest = [
        (miner, EvidenceKind.ITERATION, it_res(BOB, miner, TASK, iteration=n)) for n in (1, 2)
    ]
    statements = [iteration_statement(BOB, message) for _, _, message in honest]
    assert (
        ledger.refusal(miner, Equivocation(EvidenceKind.ITERATION, *statements))
        == Reason.EVIDENCE_NOT_PROVEN
    )
    models = [final_model_statement(BOB, sha256(task), b"model") for task in (b"a", b"b")]
    assert (
        ledger.refusal(miner, Equivocation(EvidenceKind.FINAL_MODEL, *models))
        == Reason.EVIDENCE_NOT_PROVEN
    )
    verdicts = [verdict_statement(BOB, sha256(b), True) for b in (b"one", b"two")]
    verdicts[1] = verdict_statement(BOB, sha256(b"two"), False, "loss_mismatch")
    assert (
        ledger.refusal(verifier, Equivocation(EvidenceKind.VERDICT, *verdicts))
        == Reason.EVIDENCE_NOT_PROVEN
    )


def test_two_final_models_under_one_model_hash_with_other_bytes_conflict() -> None:
    """A final model's signed body covers the hash of its bytes (`final_model_body`): a miner
    signing other bytes under the same model hash for one task equivocates."""
    ledger = Ledger()
    miner = ledger.tickets[NodeRole.MINER]
    model_hash = sha256(b"the model it claims")
    pair = [final_model_statement(BOB, TASK, data, model_hash) for data in (b"one", b"two")]
    ledger.slash(miner, Equivocation(EvidenceKind.FINAL_MODEL, *pair))
    assert miner not in ledger.state.tickets


def test_an_honest_miner_restarting_mid_task_is_not_equivocating() -> None:
    """After a restart a miner repeats iterations from its last saved state: the update
    (compression residual) and history differ, the re-executable outcome does not; a segment
    resumed mid-way names no checkpoint."""
    ledger = Ledger()
    miner = ledger.tickets[NodeRole.MINER]
    message = it_res(BOB, miner, TASK)
    replayed = msgspec.structs.replace(
        message, previous_commitment=sha256(b"other history"), peer_message_ids=()
    )
    repeat = Equivocation(
        EvidenceKind.ITERATION,
        iteration_statement(BOB, message, b"update"),
        iteration_statement(BOB, replayed, b"another update"),
    )
    assert ledger.refusal(miner, repeat) == Reason.EVIDENCE_NOT_PROVEN
    resumed = [
        msgspec.structs.replace(message, checkpoint_hash=ZERO_HASH, loss=loss) for loss in (1, 2)
    ]
    statements = [iteration_statement(BOB, m) for m in resumed]
    assert (
        ledger.refusal(miner, Equivocation(EvidenceKind.ITERATION, *statements))
        == Reason.EVIDENCE_NOT_PROVEN
    )


def test_verdicts_conflict_only_over_fake_work() -> None:
    """An honest verifier may fail a block it lacks the dataset for, then pass it."""
    ledger = Ledger()
    verifier, block_hash = ledger.tickets[NodeRole.VERIFIER], sha256(b"a block")
    for reason in ("dataset_unavailable", "checkpoint_bytes", "not a reason"):
        pair = Equivocation(
            EvidenceKind.VERDICT,
            verdict_statement(BOB, block_hash, True),
            verdict_statement(BOB, block_hash, False, reason),
        )
        assert ledger.refusal(verifier, pair) == Reason.EVIDENCE_NOT_PROVEN, reason


def test_task_results_that_agree_are_not_evidence() -> None:
    """The same result signed again (another nonce, after a restart) says nothing new."""
    ledger = Ledger()
    same = [transaction_statement(task_result_tx(BOB, TASK, 0.9, n)) for n in (5, 6)]
    assert (
        ledger.refusal(
            ledger.tickets[NodeRole.EVALUATOR], Equivocation(EvidenceKind.TASK_RESULT, *same)
        )
        == Reason.EVIDENCE_NOT_PROVEN
    )


# -- the attacks: anything else the owner signed, presented as evidence --------------------------


def _hello_envelope(key: KeyPair) -> Statement:
    hello = Hello(CHAIN, ZERO_HASH, 1, ZERO_HASH, 1, "127.0.0.1", 9000, bytes(32))
    envelope, _ = open_frame(seal(key, CHAIN, hello, 1), CHAIN, 1 << 20)
    return Statement(envelope.signed_body(), envelope.signature)


def _block_signature(key: KeyPair) -> Statement:
    header = BlockHeader(1, 1, ZERO_HASH, ZERO_HASH, 1, 1, 0, key.public_key, *[ZERO_HASH] * 3)
    block = sign_block(Block(header, ()), key, CHAIN)
    return Statement(block.hash(), block.signature)


def _hello_answer(key: KeyPair) -> Statement:
    body = challenge_body(bytes(32), VERIFIER.public_key)
    return Statement(body, key.sign_as(SignedKind.HELLO, CHAIN, body))


FOREIGN: dict[str, Callable[[KeyPair], Statement]] = {
    "hello envelope": _hello_envelope,
    "block signature": _block_signature,
    "hello answer": _hello_answer,
}


@pytest.mark.parametrize("kind", list(EvidenceKind))
@pytest.mark.parametrize("foreign", FOREIGN)
def test_what_the_owner_signed_for_something_else_is_refused(
    kind: EvidenceKind, foreign: str
) -> None:
    ledger = Ledger()
    ticket_id = ledger.tickets[ROLE_OF[kind]]
    honest = equivocation(BOB, ticket_id, TASK, kind).first
    for proof in (
        Equivocation(kind, honest, FOREIGN[foreign](BOB)),
        Equivocation(kind, FOREIGN[foreign](BOB), honest),
    ):
        assert ledger.refusal(ticket_id, proof) == Reason.BAD_EVIDENCE_SIGNATURE


@pytest.mark.parametrize("kind", list(EvidenceKind))
@pytest.mark.parametrize("signed_as", list(SignedKind))
def test_a_statement_signed_as_another_kind_is_refused(
    kind: EvidenceKind, signed_as: SignedKind
) -> None:
    """The very body the evidence kind expects, signed by the owner as any other kind."""
    ledger = Ledger()
    ticket_id = ledger.tickets[ROLE_OF[kind]]
    proof = equivocation(BOB, ticket_id, TASK, kind)
    second = proof.second
    message = sha256(second.body) if kind == EvidenceKind.TASK_RESULT else second.body
    resigned = Statement(second.body, BOB.sign_as(signed_as, CHAIN, message))
    presented = msgspec.structs.replace(proof, second=resigned)
    if signed_as == SIGNED_AS[kind]:
        ledger.slash(ticket_id, presented)
    else:
        assert ledger.refusal(ticket_id, presented) == Reason.BAD_EVIDENCE_SIGNATURE


def test_evidence_is_against_its_signer_s_ticket_of_its_role_only() -> None:
    ledger = Ledger()
    carol_ticket = ledger.apply(CAROL, BuyTicket(NodeRole.MINER, ledger.state.params.min_stake))
    miner, verifier = ledger.tickets[NodeRole.MINER], ledger.tickets[NodeRole.VERIFIER]
    against_carol = equivocation(BOB, carol_ticket.txid(), TASK, EvidenceKind.FINAL_MODEL)
    assert ledger.refusal(carol_ticket.txid(), against_carol) == Reason.BAD_EVIDENCE_SIGNATURE
    it_res_pair = equivocation(BOB, miner, TASK, EvidenceKind.ITERATION)
    assert ledger.refusal(verifier, it_res_pair) == Reason.EVIDENCE_WRONG_TICKET
    other_ticket = equivocation(BOB, sha256(b"another ticket"), TASK, EvidenceKind.ITERATION)
    assert ledger.refusal(miner, other_ticket) == Reason.EVIDENCE_WRONG_TICKET


def test_only_a_ticket_holder_may_report() -> None:
    ledger = Ledger()
    miner = ledger.tickets[NodeRole.MINER]
    proof = equivocation(BOB, miner, TASK, EvidenceKind.ITERATION)
    assert ledger.refusal(miner, proof, reporter=EVALUATOR) == Reason.REPORTER_WITHOUT_TICKET


def test_garbage_statements_are_malformed_evidence() -> None:
    ledger = Ledger()
    miner = ledger.tickets[NodeRole.MINER]
    junk = Statement(b"\xc1junk", BOB.sign_as(SignedKind.FINAL_MODEL, CHAIN, b"\xc1junk"))
    proof = Equivocation(EvidenceKind.FINAL_MODEL, junk, junk)
    assert ledger.refusal(miner, proof) == Reason.MALFORMED_EVIDENCE


# -- failed re-execution -------------------------------------------------------------------------


class Reexecutions:
    def __init__(self, outcome: Reason | None) -> None:
        self.outcome = outcome
        self.blocks: list[bytes] = []

    def __call__(self, block: Block) -> Reason | None:
        self.blocks.append(block.hash())
        return self.outcome


def _signed_block(key: KeyPair, ticket_id: bytes, task_id: bytes) -> bytes:
    message = it_res(key, ticket_id, task_id).encode()
    header = BlockHeader(
        1, 7, sha256(b"parent"), ZERO_HASH, 1, 1, 3, key.public_key, sha256(message),
        ZERO_HASH, ZERO_HASH,
    )  # fmt: skip
    block = Block(header, (), iteration_message=message, checkpoint=b"checkpoint")
    return encode_block(sign_block(block, key, CHAIN))


def _with_task(outcome: Reason | None) -> tuple[Ledger, Reexecutions, bytes]:
    reexecutions = Reexecutions(outcome)
    ledger = Ledger(reexecutions)
    return ledger, reexecutions, ledger.apply(CAROL, PayForTask(DIGITS, 10)).txid()


def test_a_signed_block_failing_re_execution_for_fake_work_confiscates() -> None:
    ledger, reexecutions, task_id = _with_task(Reason.LOSS_MISMATCH)
    miner = ledger.tickets[NodeRole.MINER]
    proof = FailedReexecution(_signed_block(BOB, miner, task_id))
    ledger.slash(miner, proof)
    assert miner not in ledger.state.tickets and len(reexecutions.blocks) == 1
    assert ledger.refusal(miner, proof) == Reason.UNKNOWN_TICKET


@pytest.mark.parametrize("outcome", [None, Reason.DATASET_UNAVAILABLE, Reason.CHECKPOINT_BYTES])
def test_a_block_whose_re_execution_shows_no_fake_work_proves_nothing(
    outcome: Reason | None,
) -> None:
    """An honest block holds; a missing dataset or bytes a relay broke are not the miner's."""
    ledger, reexecutions, task_id = _with_task(outcome)
    miner = ledger.tickets[NodeRole.MINER]
    proof = FailedReexecution(_signed_block(BOB, miner, task_id))
    assert ledger.refusal(miner, proof) == Reason.EVIDENCE_NOT_PROVEN
    assert len(reexecutions.blocks) == 1


def test_a_block_is_re_executed_only_once_the_cheap_checks_hold() -> None:
    ledger, reexecutions, task_id = _with_task(Reason.LOSS_MISMATCH)
    miner = ledger.tickets[NodeRole.MINER]
    cases = {
        Reason.BAD_EVIDENCE_SIGNATURE: _signed_block(CAROL, miner, task_id),
        Reason.EVIDENCE_WRONG_TICKET: _signed_block(BOB, sha256(b"other ticket"), task_id),
        Reason.EVIDENCE_NOT_PROVEN: _signed_block(BOB, miner, sha256(b"no such task")),
        Reason.MALFORMED_EVIDENCE: b"not a block",
    }
    for reason, encoded in cases.items():
        assert ledger.refusal(miner, FailedReexecution(encoded)) == reason
    assert reexecutions.blocks == []


def test_a_block_of_a_task_no_longer_open_proves_nothing() -> None:
    """Nodes' re-execution looks up open tasks only: a closed task's block is not re-run."""
    ledger, reexecutions, task_id = _with_task(Reason.LOSS_MISMATCH)
    miner = ledger.tickets[NodeRole.MINER]
    record = ledger.state.tasks[task_id]
    ledger.state.tasks[task_id] = msgspec.structs.replace(record, status="completed")
    proof = FailedReexecution(_signed_block(BOB, miner, task_id))
    assert ledger.refusal(miner, proof) == Reason.EVIDENCE_NOT_PROVEN
    assert reexecutions.blocks == []


def test_a_ledger_that_re_executes_nothing_takes_no_failed_re_execution() -> None:
    ledger = Ledger()
    task_id = ledger.apply(CAROL, PayForTask(DIGITS, 10)).txid()
    miner = ledger.tickets[NodeRole.MINER]
    proof = FailedReexecution(_signed_block(BOB, miner, task_id))
    assert ledger.refusal(miner, proof) == Reason.EVIDENCE_NOT_PROVEN


def test_a_mined_slash_names_its_offender_for_reputation() -> None:
    miner = sha256(b"ticket")
    proofs: list[Proof] = [equivocation(BOB, miner, TASK, kind) for kind in EvidenceKind]
    proofs.append(FailedReexecution(_signed_block(BOB, miner, TASK)))
    assert {offender(SlashEvidence(miner, proof)) for proof in proofs} == {BOB.public_key}
    junk = Equivocation(EvidenceKind.VERDICT, Statement(b"", b""), Statement(b"", b""))
    assert offender(SlashEvidence(miner, junk)) is None
    assert offender(SlashEvidence(miner, FailedReexecution(b"junk"))) is None
