"""Verdicts count only from live verifier tickets (drawn ones on a client task's blocks), one
per (block, verifier): the intake against fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.node.fakes import (
    PARAMS,
    FakeAnnouncer,
    FakeLedger,
    assignment,
    block,
    context,
    key,
    message_of,
    task,
    ticket,
)

from pouw.blockchain.block import Block
from pouw.blockchain.params import bootstrap_task_id
from pouw.crypto import KeyPair, sha256
from pouw.errors import Reason
from pouw.monitoring.health import HealthTracker
from pouw.network.messages import ItemKind, ItemResult, Verdict
from pouw.node.attestations import Attestation, AttestationBook, verified
from pouw.node.intake import Intake
from pouw.node.items import BlockVerdict, encode_item, sign_verdict
from pouw.roles import NodeRole

MINER = key("m0")
VERIFIER = key("m1")
OTHER_VERIFIER = key("m2")
OUTSIDER = key("m3")
CLIENT_TASK = sha256(b"a client task")


def setup(tmp_path: Path) -> tuple[FakeLedger, Intake]:
    ledger = FakeLedger()
    for holder in (VERIFIER, OTHER_VERIFIER):
        live = ticket(holder, NodeRole.VERIFIER)
        ledger.state.tickets[live.ticket_id] = live
    intake = Intake(context(tmp_path), ledger, FakeAnnouncer(), HealthTracker())  # type: ignore[arg-type]
    return ledger, intake


def known_block(ledger: FakeLedger, task_id: bytes | None) -> Block:
    message = None if task_id is None else message_of(MINER, task_id)
    mined = block(MINER, message)
    ledger.chain.blocks[mined.hash()] = mined
    return mined


def send(intake: Intake, signer: KeyPair, target: Block, valid: bool = True) -> ItemResult:
    verdict = sign_verdict(
        signer,
        PARAMS.chain_id,
        BlockVerdict(target.hash(), signer.public_key, valid, "" if valid else "x"),
    )
    return asyncio.run(
        intake.on_item(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict), "peer")
    )


def test_a_verdict_signed_by_a_key_without_a_ticket_is_rejected(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    mined = known_block(ledger, bootstrap_task_id(PARAMS))
    answer = send(intake, OUTSIDER, mined)
    assert (answer.verdict, answer.reason) == (Verdict.REJECTED, Reason.NOT_A_VERIFIER)
    assert intake.attestations.verdicts(mined.hash()) == []
    assert intake.block_attestations(mined) == []


def test_a_live_verifiers_verdict_on_a_bootstrap_block_is_shown(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    mined = known_block(ledger, bootstrap_task_id(PARAMS))
    assert send(intake, VERIFIER, mined).verdict == Verdict.ACCEPTED
    assert intake.block_attestations(mined) == [Attestation(VERIFIER.address, True, "")]


def test_on_a_client_task_only_the_drawn_verifiers_attest(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    ledger.add_task(task(CLIENT_TASK), assignment([MINER], verifiers=[VERIFIER]))
    mined = known_block(ledger, CLIENT_TASK)
    undrawn = send(intake, OTHER_VERIFIER, mined)  # a live ticket, not drawn for the task
    assert (undrawn.verdict, undrawn.reason) == (Verdict.REJECTED, Reason.NOT_A_VERIFIER)
    assert send(intake, VERIFIER, mined).verdict == Verdict.ACCEPTED
    assert intake.block_attestations(mined) == [Attestation(VERIFIER.address, True, "")]


def test_a_verifiers_second_verdict_on_a_block_is_known_and_not_counted(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    mined = known_block(ledger, None)
    assert send(intake, VERIFIER, mined).verdict == Verdict.ACCEPTED
    again = send(intake, VERIFIER, mined, valid=False)  # another verdict, same verifier
    assert (again.verdict, again.reason) == (Verdict.KNOWN, "")
    assert send(intake, OTHER_VERIFIER, mined).verdict == Verdict.ACCEPTED
    shown = intake.block_attestations(mined)
    assert shown == sorted(
        [Attestation(VERIFIER.address, True, ""), Attestation(OTHER_VERIFIER.address, True, "")],
        key=lambda a: a.verifier,
    )
    assert verified(shown) is True


def test_a_verdict_ahead_of_its_block_is_kept_and_judged_again_when_shown(
    tmp_path: Path,
) -> None:
    """An honest relay can be a block ahead: the verdict is taken from a live verifier and
    relayed; once the block is known, the view shows it only if that verifier was drawn."""
    ledger, intake = setup(tmp_path)
    ledger.add_task(task(CLIENT_TASK), assignment([MINER], verifiers=[VERIFIER]))
    ahead = block(MINER, message_of(MINER, CLIENT_TASK))
    assert send(intake, VERIFIER, ahead).verdict == Verdict.ACCEPTED
    assert send(intake, OTHER_VERIFIER, ahead).verdict == Verdict.ACCEPTED
    ledger.chain.blocks[ahead.hash()] = ahead
    assert intake.block_attestations(ahead) == [Attestation(VERIFIER.address, True, "")]


def test_a_slashed_verifiers_attestation_is_no_longer_shown(tmp_path: Path) -> None:
    ledger, intake = setup(tmp_path)
    mined = known_block(ledger, None)
    assert send(intake, VERIFIER, mined).verdict == Verdict.ACCEPTED
    del ledger.state.tickets[ticket(VERIFIER, NodeRole.VERIFIER).ticket_id]
    assert intake.block_attestations(mined) == []
    assert verified([]) is None


def test_verified_is_false_when_any_attestation_says_invalid() -> None:
    assert verified([Attestation("a", True, ""), Attestation("b", False, "loss_mismatch")]) is False


def test_the_book_is_bounded_per_block_and_unknown_blocks_apart() -> None:
    book = AttestationBook(blocks=2, pending=1, per_block=2)
    signers = [key(f"v{n}") for n in range(3)]

    def verdict(block_hash: bytes, signer: KeyPair) -> BlockVerdict:
        return BlockVerdict(block_hash, signer.public_key, True)

    real = sha256(b"real")
    assert book.add(verdict(real, signers[0])) and book.add(verdict(real, signers[1]))
    assert not book.add(verdict(real, signers[2]))  # the block has its fill
    for number in range(5):  # made-up hashes push out each other, not the real block's
        book.add(verdict(sha256(bytes([number])), signers[0]), block_known=False)
    assert len(book.verdicts(real)) == 2
    assert len(book.verdicts(sha256(bytes([4])))) == 1
    assert book.verdicts(sha256(bytes([0]))) == []
    for number in range(2):
        book.add(verdict(sha256(b"known" + bytes([number])), signers[0]))
    assert book.verdicts(real) == []  # the oldest known block is forgotten
