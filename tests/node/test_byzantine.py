"""A Byzantine miner publishes attacked updates; its fake work fails re-execution."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import torch
from tests.mining.conftest import TINY

from pouw.bench.mining import MiningRig
from pouw.blockchain.block import Block, encode_block
from pouw.blockchain.draw import Ticket
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.params import devnet_key, devnet_params
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import FailedReexecution, SlashEvidence, sign_transaction
from pouw.crypto import sha256
from pouw.errors import InvalidTransaction, Reason
from pouw.mining.verify import BlockVerifier
from pouw.ml.compression import StromCompressor
from pouw.node.byzantine import ByzantineMiner, encode_dense
from pouw.roles import NodeRole
from pouw.security import SenderScreen
from pouw.security.attacks import flip_labels
from pouw.security.defence import Defence
from pouw.spec import TaskSpec

TAU = 1e-3


def strom_update(seed: int, size: int = 300) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return StromCompressor(size, TAU).compress(2 * TAU * torch.randn(size, generator=generator))


def test_a_flipped_or_scaled_strom_update_is_encoded_exactly() -> None:
    honest = strom_update(0)
    dense = honest.to_dense()
    for attacked in (-dense, 10 * dense):
        encoded = encode_dense(attacked, honest.nnz)
        assert encoded.nnz == honest.nnz
        assert torch.allclose(encoded.to_dense(), attacked, rtol=1e-6, atol=0)


def test_a_dense_attack_keeps_its_norm_on_the_honest_number_of_entries() -> None:
    noise = torch.randn(300, generator=torch.Generator().manual_seed(1))
    encoded = encode_dense(noise, 40)
    assert encoded.nnz == 40
    assert torch.isclose(encoded.to_dense().norm(), noise.norm(), rtol=1e-5)
    assert encode_dense(torch.zeros(300), 40).nnz == 0


@pytest.mark.parametrize("kind", ["sign_flip", "scale", "noise"])
def test_the_screen_flags_what_an_attacker_publishes(kind: str) -> None:
    attacker = ByzantineMiner(kind, lambda task_id: True, b"attacker")
    screen = SenderScreen()
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        shared = 3 * TAU * torch.randn(300, generator=generator)
        honest = [
            StromCompressor(300, TAU).compress(shared + TAU * torch.randn(300, generator=generator))
            for _ in range(4)
        ]
        published = attacker.update(_Trainer(), honest[0])  # type: ignore[arg-type]
        updates = [u.to_dense() for u in honest] + [published.to_dense()]
        flags = screen.screen(range(5), updates)
    assert flags == [False] * 4 + [True]


def test_nothing_is_attacked_where_the_predicate_says_no() -> None:
    attacker = ByzantineMiner("sign_flip", lambda task_id: False, b"attacker")
    update = strom_update(2)
    assert attacker.update(_Trainer(), update) is update  # type: ignore[arg-type]


def test_an_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attack"):
        ByzantineMiner("bribe", lambda task_id: True, b"attacker")


def test_fake_work_blocks_fail_reexecution_and_update_attacks_do_not(tmp_path: Path) -> None:
    """The rig's chain re-executes every block, as every node's does."""
    fake_rig = MiningRig(TINY, tmp_path / "fake_work", difficulty=4)
    fake_rig.check_own_blocks = True
    miner = fake_rig.miner()
    miner.tampering = ByzantineMiner("fake_work", lambda task_id: True, b"attacker")
    miner.train(fake_rig.trainer(TINY), max_iterations=40)
    assert not fake_rig.blocks and fake_rig.chain.height == 0
    assert fake_rig.rejected and set(fake_rig.rejected) == {"update_mismatch"}
    flip_rig = MiningRig(TINY, tmp_path / "sign_flip", difficulty=4)
    miner = flip_rig.miner()
    miner.tampering = ByzantineMiner("sign_flip", lambda task_id: True, b"attacker")
    flip_rig.mine_blocks(flip_rig.trainer(TINY), 3, miner)
    assert len(flip_rig.blocks) >= 3 and not flip_rig.rejected


def test_a_stale_model_publishes_gradients_of_an_older_model(tmp_path: Path) -> None:
    rig = MiningRig(TINY, tmp_path, difficulty=10**9)
    trainer = rig.trainer(TINY)
    attacker = ByzantineMiner("stale_model", lambda task_id: True, b"attacker")
    x, y = trainer.batch_tensors()
    first = attacker.gradients(trainer, x, y, [])
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(0.1)
    again = attacker.gradients(trainer, x, y, [])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True)), "still the old model"


def test_a_label_flipper_publishes_gradients_of_the_flipped_labels(tmp_path: Path) -> None:
    rig = MiningRig(TINY, tmp_path, difficulty=10**9)
    trainer = rig.trainer(TINY)
    attacker = ByzantineMiner("label_flip", lambda task_id: True, b"attacker")
    x, y = trainer.batch_tensors()
    honest = [p.grad for p in trainer.model.parameters()]
    flipped = attacker.gradients(trainer, x, y, [])
    trainer.model.zero_grad()
    loss = torch.nn.functional.cross_entropy(
        trainer.model(x), flip_labels(y, trainer.dataset.num_classes)
    )
    expected = torch.autograd.grad(loss, list(trainer.model.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(flipped, expected, strict=True))
    assert [p.grad for p in trainer.model.parameters()] == honest, "its own grads untouched"


class _Inbox:
    """What an attacker reads of its trainer's PeerUpdates: its peers' latest updates and the
    task's defence."""

    def __init__(self, latest: dict[bytes, torch.Tensor], defence: Defence | None) -> None:
        self._latest = latest
        self.defence = defence
        self.own = b"attacker"

    def latest(self) -> dict[bytes, torch.Tensor]:
        return self._latest


def _peers(count: int = 4) -> dict[bytes, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    shared = 3 * TAU * torch.randn(300, generator=generator)
    return {
        bytes([i]) * 32: shared + TAU * torch.randn(300, generator=generator) for i in range(count)
    }


@pytest.mark.parametrize("kind", ["ipm", "mimic"])
def test_ipm_and_mimic_are_made_from_the_peers_latest_updates(kind: str) -> None:
    peers = _peers()
    trainer = _Trainer()
    trainer.peers = _Inbox(peers, None)  # type: ignore[assignment]
    published = ByzantineMiner(kind, lambda task_id: True, b"attacker").update(
        trainer,  # type: ignore[arg-type]
        strom_update(3),
    )
    mean = torch.stack(list(peers.values())).mean(dim=0)
    cosine = torch.nn.functional.cosine_similarity(published.to_dense(), mean, dim=0)
    assert (cosine < -0.5) if kind == "ipm" else (cosine > 0.5)


@pytest.mark.parametrize("kind", ["adaptive_ipm", "adaptive_alie_fresh"])
def test_an_adaptive_attacker_searches_against_its_own_copy_of_the_defence(kind: str) -> None:
    peers = _peers()
    defence = Defence(300, byzantine=1)
    trainer = _Trainer()
    trainer.peers = _Inbox(peers, defence)  # type: ignore[assignment]
    published = ByzantineMiner(kind, lambda task_id: True, b"attacker").update(
        trainer,  # type: ignore[arg-type]
        strom_update(4),
    )
    senders = [*peers, b"attacker"]
    verdict = defence.probe(senders, [*peers.values(), published.to_dense()])
    assert not verdict.flagged[-1], "it sends what the defence passes"
    assert defence.screen.direction(b"attacker") is None, "probing left no trace"


def _sealed_blocks(rig: MiningRig, tampering: ByzantineMiner | None, count: int) -> list[Block]:
    """Blocks the rig's miner sealed (whatever the chain then made of them)."""
    sealed: list[Block] = []
    miner = rig.miner()
    miner.on_block = lambda block: (sealed.append(block), rig.accept(block))
    miner.tampering = tampering
    trainer = rig.trainer(TINY)
    while len(sealed) < count and not trainer.finished:
        miner.train(trainer, max_iterations=10)
    return sealed[:count]


def _spec_in(state: LedgerState) -> Callable[[bytes], TaskSpec | None]:
    return lambda task_id: state.tasks[task_id].spec if task_id in state.tasks else None


def _spec_in(state: LedgerState) -> Callable[[bytes], TaskSpec | None]:
    return lambda task_id: state.tasks[task_id].spec if task_id in state.tasks else None


def test_a_fake_work_block_is_slashing_evidence_every_node_checks(tmp_path: Path) -> None:
    """The verifier's evidence through the real re-execution: the miner's own signed block."""
    fake_rig = MiningRig(TINY, tmp_path / "fake", difficulty=4)
    fake_rig.check_own_blocks = True
    fake_work = ByzantineMiner("fake_work", lambda task_id: True, b"attacker")
    (fake,) = _sealed_blocks(fake_rig, fake_work, 1)
    (honest,) = _sealed_blocks(MiningRig(TINY, tmp_path / "honest", difficulty=4), None, 1)
    params = devnet_params(("miner", "reporter"), initial_difficulty=4, bootstrap_task=TINY)
    miner, reporter = devnet_key("miner"), devnet_key("reporter")
    for block, outcome in ((honest, Reason.EVIDENCE_NOT_PROVEN), (fake, None)):
        state = LedgerState.genesis(params)
        state.slashing.reexecution = BlockVerifier(params, _spec_in(state)).failure
        ticket_id = decode_iteration_message(block.iteration_message).ticket_id
        reporter_ticket = sha256(b"the reporter's ticket")
        for key, role, number in (
            (miner, NodeRole.MINER, ticket_id),
            (reporter, NodeRole.VERIFIER, reporter_ticket),
        ):
            state.tickets[number] = Ticket(number, key.address, key.public_key, role, 0, 0)
        proof = encode_block(msgspec.structs.replace(block, transactions=()))
        slash = sign_transaction(
            reporter, SlashEvidence(ticket_id, FailedReexecution(proof)), nonce=0, fee=1,
            chain_id=params.chain_id,
        )  # fmt: skip
        with state.tracking():
            if outcome is None:
                state.apply_transaction(slash, slash.txid(), height=1)
                assert ticket_id not in state.tickets
            else:
                with pytest.raises(InvalidTransaction) as refused:
                    state.apply_transaction(slash, slash.txid(), height=1)
                assert refused.value.reason == outcome
    # A node that re-ran the fake block answers for other checkpoint bytes (the block hash does
    # not cover them) as a node that never saw it: not proven.
    verifier = BlockVerifier(params, _spec_in(LedgerState.genesis(params)))
    reason = verifier.failure(fake)
    assert reason is not None and reason.fake_work
    for other_bytes in (b"", fake.checkpoint[:-1]):
        swapped = msgspec.structs.replace(fake, checkpoint=other_bytes)
        assert verifier.failure(swapped) == Reason.CHECKPOINT_BYTES


class _Trainer:
    """What ByzantineMiner.update reads of a trainer."""

    task_id = b"\x01" * 32
    workers = 5
    peers = None
