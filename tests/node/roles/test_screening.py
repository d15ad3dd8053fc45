"""The screening and supervisor roles against fakes: who screens a task, what a flagged miner
costs, what the supervisor keeps."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.node.fakes import IRIS, FakeLedger, assignment, context, key, message_of, record, task

from pouw.crypto import KeyPair, sha256
from pouw.ml.compression import CompressedUpdate
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel, IterationRecord, decode_item
from pouw.node.roles.screening import ScreeningRole
from pouw.node.roles.supervisor import SupervisorRole
from pouw.roles import NodeRole
from pouw.spec import model_parameters

TASK_ID = sha256(b"a task")
HONEST = [key("m0"), key("m1"), key("m2")]
ATTACKER = key("m3")
SIZE = model_parameters(IRIS.model)
DIRECTION = torch.randn(SIZE, generator=torch.Generator().manual_seed(0)).sign()


def update(seed: int, flip: bool = False) -> bytes:
    """A sparse update along the common direction with a tenth of its signs noisy; `flip`
    pushes the other way."""
    noise = torch.rand(SIZE, generator=torch.Generator().manual_seed(seed)) < 0.1
    signs = torch.where(noise, -DIRECTION, DIRECTION)
    signs = -signs if flip else signs
    return CompressedUpdate(SIZE, 0.01, torch.arange(SIZE), signs.to(torch.int8)).to_bytes()


def setup(
    tmp_path: Path, miners: list[KeyPair], *, supervisor: bool = True
) -> tuple[NodeContext, ScreeningRole]:
    node = context(tmp_path, role=NodeRole.SUPERVISOR)
    ledger = FakeLedger()
    checkers = [node.key] if supervisor else [key("m4")]
    ledger.add_task(task(TASK_ID), assignment(miners, supervisors=checkers))
    return node, ScreeningRole(node, ledger)  # type: ignore[arg-type]


def train(node: NodeContext, miners: list[KeyPair], epochs: int = 4) -> None:
    """Each miner sends one update an epoch, then its final model."""
    for epoch in range(epochs):
        for number, miner in enumerate(miners):
            message = message_of(miner, TASK_ID, epoch=epoch)
            published = update(100 * epoch + number, flip=miner is ATTACKER)
            node.events.peer_iteration.emit(message, record(message, published))
    for miner in miners:
        node.events.final_model.emit(FinalModel(TASK_ID, miner.public_key, bytes(32), b"", 1))


def test_a_miner_pushing_against_the_others_is_flagged_and_excluded(tmp_path: Path) -> None:
    miners = [*HONEST, ATTACKER]
    node, role = setup(tmp_path, miners)
    train(node, miners, epochs=6)  # the screen judges once it has weighed a few rounds
    assert node.counters.attacks_detected["anomalous_update"] >= 3
    reputation = node.reputation
    assert all(reputation.score(ATTACKER.address) < reputation.score(m.address) for m in HONEST)
    assert role.excluded(TASK_ID) == {ATTACKER.address}


def test_a_node_that_checks_nothing_screens_nothing(tmp_path: Path) -> None:
    miners = [*HONEST, ATTACKER]
    node, role = setup(tmp_path, miners, supervisor=False)
    train(node, miners)
    assert node.counters.attacks_detected == {} and role.excluded(TASK_ID) == set()


def test_two_miners_cannot_be_screened(tmp_path: Path) -> None:
    miners = [HONEST[0], ATTACKER]
    node, role = setup(tmp_path, miners)
    train(node, miners)
    assert node.counters.attacks_detected == {} and role.excluded(TASK_ID) == set()


def test_the_supervisor_journals_every_iteration_of_a_task(tmp_path: Path) -> None:
    node = context(tmp_path, role=NodeRole.SUPERVISOR)
    supervisor = SupervisorRole(node)
    sent = [record(message_of(m, TASK_ID, iteration=i), update(i)) for i, m in enumerate(HONEST)]
    for kept in sent:
        node.events.peer_iteration.emit(message_of(key("m0"), TASK_ID), kept)
    journal = supervisor.journal_of(TASK_ID).read_bytes()
    records = []
    while journal:
        length = int.from_bytes(journal[:4], "big")
        records.append(decode_item(IterationRecord, journal[4 : 4 + length]))
        journal = journal[4 + length :]
    assert records == sent
