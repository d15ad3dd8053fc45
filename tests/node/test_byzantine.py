"""A Byzantine miner publishes attacked updates; its fake work fails re-execution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.mining.conftest import TINY

from pouw.bench.mining import MiningRig
from pouw.ml.compression import StromCompressor
from pouw.node.byzantine import ByzantineMiner, encode_dense
from pouw.security import SenderScreen

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


class _Trainer:
    """What ByzantineMiner.update reads of a trainer."""

    task_id = b"\x01" * 32
    workers = 5
    peers = None
