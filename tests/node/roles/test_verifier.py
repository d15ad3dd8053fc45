"""The verifier role against fakes: re-execution before the ledger, verdicts, slashing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from tests.node.fakes import (
    FakeAnnouncer,
    FakeLedger,
    block,
    context,
    key,
    message_of,
    ticket,
)

from pouw.blockchain.block import decode_block
from pouw.blockchain.transactions import FailedReexecution, SlashEvidence
from pouw.crypto import sha256
from pouw.errors import InvalidBlock, Reason
from pouw.monitoring.health import HealthTracker
from pouw.network.messages import ItemKind, Verdict
from pouw.node.context import NodeContext
from pouw.node.intake import Intake
from pouw.node.items import BlockVerdict, decode_item
from pouw.node.roles.verifier import VerifierRole
from pouw.roles import NodeRole

T = TypeVar("T")
CHEAT = key("m0")
RELAY = key("m1")
TASK_ID = sha256(b"a task")


def setup(
    tmp_path: Path, *, staked: bool = True
) -> tuple[NodeContext, FakeLedger, FakeAnnouncer, Intake, VerifierRole]:
    node = context(tmp_path, role=NodeRole.VERIFIER)
    ledger = FakeLedger()
    for owner, role in ((CHEAT, NodeRole.MINER), (node.key, NodeRole.VERIFIER)):
        if staked or role == NodeRole.MINER:
            drawn = ticket(owner, role)
            ledger.state.tickets[drawn.ticket_id] = drawn
    announcer = FakeAnnouncer()
    intake = Intake(node, ledger, announcer, HealthTracker())  # type: ignore[arg-type]
    role = VerifierRole(node, ledger, announcer, intake)  # type: ignore[arg-type]
    return node, ledger, announcer, intake, role


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def verdicts(announcer: FakeAnnouncer) -> list[BlockVerdict]:
    return [
        decode_item(BlockVerdict, payload)
        for kind, _, payload in announcer.announced
        if kind == ItemKind.VERDICT
    ]


def test_a_block_that_re_executes_passes_and_gets_a_signed_verdict(tmp_path: Path) -> None:
    node, ledger, announcer, intake, _ = setup(tmp_path)
    honest = block(CHEAT, message_of(CHEAT, TASK_ID))
    assert run(intake.reexecute(honest, RELAY.public_key.hex())) is None
    assert ledger.seal.reexecuted == [honest.hash()]
    node.events.block_accepted.emit(honest)
    (verdict,) = verdicts(announcer)
    assert (verdict.block_hash, verdict.valid, verdict.verifier) == (
        honest.hash(),
        True,
        node.key.public_key,
    )
    assert intake.attestations.verdicts(honest.hash()) == [verdict]
    assert node.counters.blocks_verified == 1


def test_fake_work_is_rejected_counted_and_slashed_with_its_signed_block(tmp_path: Path) -> None:
    node, ledger, announcer, intake, _ = setup(tmp_path)
    cheat_ticket = ticket(CHEAT, NodeRole.MINER).ticket_id
    fake = block(CHEAT, message_of(CHEAT, TASK_ID, ticket_id=cheat_ticket))
    ledger.seal.bad[fake.hash()] = InvalidBlock(Reason.LOSS_MISMATCH, "re-run differs")
    answer = run(intake.reexecute(fake, CHEAT.public_key.hex()))  # from its own miner
    assert answer is not None and (answer.verdict, answer.reason) == (
        Verdict.REJECTED,
        Reason.LOSS_MISMATCH,
    )
    (verdict,) = verdicts(announcer)
    assert (verdict.valid, verdict.reason) == (False, "loss_mismatch")
    counters = node.counters
    assert (counters.blocks_rejected, counters.attacks_detected["fake_work"]) == (1, 1)
    (slash,) = ledger.submitted
    assert isinstance(slash, SlashEvidence) and slash.ticket_id == cheat_ticket
    assert isinstance(slash.proof, FailedReexecution)
    proof = decode_block(slash.proof.block)
    assert proof.hash() == fake.hash() and proof.transactions == ()  # the header commits to them
    node.events.block_rejected.emit(fake, InvalidBlock(Reason.LOSS_MISMATCH))
    assert len(ledger.submitted) == 1


def test_a_relay_of_fake_work_is_blamed_like_its_miner(tmp_path: Path) -> None:
    """Every node re-executes before it relays: fake work reaches us only from a peer that
    did not, or a peer that lies."""
    node, ledger, _, intake, _ = setup(tmp_path)
    fake = block(CHEAT, message_of(CHEAT, TASK_ID))
    ledger.seal.bad[fake.hash()] = InvalidBlock(Reason.UPDATE_MISMATCH)
    first = run(intake.reexecute(fake, RELAY.public_key.hex()))
    assert first is not None and first.verdict == Verdict.REJECTED
    assert node.counters.blocks_rejected == 1


def test_a_rejection_that_is_not_fake_work_is_not_slashed(tmp_path: Path) -> None:
    node, ledger, _, intake, _ = setup(tmp_path)
    message = message_of(CHEAT, TASK_ID)
    broken = block(CHEAT, message)
    ledger.seal.bad[broken.hash()] = InvalidBlock(Reason.DATASET_UNAVAILABLE, "offline")
    answer = run(intake.reexecute(broken, RELAY.public_key.hex()))
    assert answer is not None and answer.verdict == Verdict.REJECTED  # whoever relays it
    assert ledger.submitted == [] and node.counters.attacks_detected == {}


def test_a_verifier_without_a_ticket_does_not_slash(tmp_path: Path) -> None:
    node, ledger, _, intake, _ = setup(tmp_path, staked=False)
    message = message_of(CHEAT, TASK_ID, ticket_id=ticket(CHEAT, NodeRole.MINER).ticket_id)
    fake = block(CHEAT, message)
    ledger.seal.bad[fake.hash()] = InvalidBlock(Reason.BATCH_MISMATCH)
    run(intake.reexecute(fake, CHEAT.public_key.hex()))
    assert ledger.submitted == [] and node.counters.attacks_detected["fake_work"] == 1
