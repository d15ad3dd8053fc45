"""Miners apply their peers' updates through the task's defence, and still mine valid blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.mining.conftest import TINY

from pouw.bench.mining import MiningRig
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.crypto import hash_concat
from pouw.mining.miner import MiningStats
from pouw.mining.peers import AppliedUpdates, PeerUpdates, apply_correction
from pouw.mining.verify import BlockVerifier
from pouw.ml.aggregation import MultiKrumAggregator
from pouw.ml.compression import CompressedUpdate, StromCompressor
from pouw.security.defence import Defence

SIZE = 50
OWN, PEER, ATTACKER, STRANGER = (bytes([i]) * 32 for i in range(4))
TAU = 0.01


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def encoded(values: list[float]) -> bytes:
    """A compressed update of +/-TAU at the signs of `values` (zeros left out)."""
    dense = torch.zeros(SIZE)
    dense[: len(values)] = torch.tensor(values)
    return StromCompressor(SIZE, TAU).compress(dense * TAU).to_bytes()


def defence(aggregator: str, size: int = SIZE) -> Defence | None:
    """The task's defence with `aggregator` (None: the unprotected mean), no momentum."""
    if aggregator == "mean":
        return None
    return Defence(size, 1, aggregator=aggregator, momentum=0.0)


def inbox(aggregator: str = "median") -> tuple[PeerUpdates, Clock]:
    clock = Clock()
    peers = PeerUpdates(
        OWN, [OWN, PEER, ATTACKER], SIZE, defence=defence(aggregator), every_s=1.0, clock=clock
    )
    return peers, clock


def boosted(factor: float) -> bytes:
    return CompressedUpdate(
        SIZE, factor * TAU, torch.tensor([0, 1]), torch.tensor([1, 1], dtype=torch.int8)
    ).to_bytes()


def test_nothing_is_taken_before_it_is_time_or_without_peers() -> None:
    peers, clock = inbox()
    peers.add(OWN, encoded([1, 1]))
    clock.now = 5.0
    assert peers.take() is None, "only its own update"
    peers.add(PEER, encoded([1, 1]))
    applied = peers.take()
    assert applied is not None and applied.miners == 2
    peers.add(PEER, encoded([1, 1]))
    assert peers.take() is None, "a second apply waits every_s"


def test_the_median_ignores_a_flipped_update_and_the_mean_does_not() -> None:
    for aggregator, expected in (("median", 0.0), ("mean", -2 / 3 * TAU)):
        peers, clock = inbox(aggregator)
        peers.add(OWN, encoded([1, 1, 1]))
        peers.add(PEER, encoded([1, 1, 1, 1]))  # a copy of OWN's would be one vote
        peers.add(ATTACKER, encoded([-1, -1, -1, -1]))
        clock.now = 1.0
        applied = peers.take()
        assert applied is not None
        assert torch.allclose(applied.correction[:3], torch.full((3,), expected), atol=1e-7)
        assert not applied.correction[3:].any()


def test_the_defence_leaves_a_flagged_peer_out() -> None:
    peers, clock = inbox("robust")
    peers.add(OWN, encoded([1, 1]))
    peers.add(PEER, encoded([-1, -1]))
    peers.add(ATTACKER, boosted(100))
    clock.now = 1.0
    applied = peers.take()
    assert applied is not None and applied.miners == 2, "over ten times the median length"
    # mean(own, peer) - own: the attacker's boost is gone
    assert torch.allclose(applied.correction[:2], torch.full((2,), -TAU))


def test_updates_are_summed_per_miner_and_committed_to() -> None:
    peers, clock = inbox("mean")
    first, second = encoded([1, 0]), encoded([1, 1])
    assert peers.add(PEER, first) and peers.add(PEER, second)
    clock.now = 1.0
    applied = peers.take()
    assert applied is not None
    # mean of (own: nothing, peer: the sum) minus own
    assert torch.allclose(applied.correction[:2], torch.tensor([TAU, TAU / 2]))
    digests = [CompressedUpdate.from_bytes(u, SIZE).digest() for u in (first, second)]
    assert applied.digest == hash_concat(*digests)
    (latest,) = peers.latest().values()
    assert torch.equal(latest, CompressedUpdate.from_bytes(second, SIZE).to_dense())


def test_strangers_and_undecodable_updates_are_left_out() -> None:
    peers, clock = inbox()
    assert not peers.add(STRANGER, encoded([1]))
    assert not peers.add(PEER, b"garbage")
    too_long = StromCompressor(SIZE + 1, TAU).compress(torch.ones(SIZE + 1))
    assert not peers.add(PEER, too_long.to_bytes())
    clock.now = 1.0
    assert peers.take() is None


def test_krum_with_few_updates_falls_back_to_the_median() -> None:
    updates = [torch.ones(4), torch.ones(4), -10 * torch.ones(4)]
    assert torch.equal(MultiKrumAggregator(1).aggregate(updates), torch.ones(4))


def test_a_correction_moves_every_parameter_in_order() -> None:
    model = torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.ones_(model.bias)
    apply_correction(list(model.parameters()), torch.arange(6, dtype=torch.float32))
    assert torch.equal(model.weight.detach(), torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert torch.equal(model.bias.detach(), torch.tensor([5.0, 6.0]))


def test_blocks_mined_while_applying_peers_updates_still_reexecute(tmp_path: Path) -> None:
    rig = MiningRig(TINY, tmp_path, difficulty=4)
    trainer = rig.trainer(TINY)
    peer = bytes(32)
    peers = PeerUpdates(
        rig.miner_key.public_key, [rig.miner_key.public_key, peer], trainer.model_size,
        defence=defence("median", trainer.model_size), every_s=0.0,
    )  # fmt: skip
    trainer.peers = peers
    compressor = StromCompressor(trainer.model_size, TINY.tau)
    generator = torch.Generator().manual_seed(0)

    def peer_publishes(stats: MiningStats) -> None:
        noise = 0.01 * torch.randn(trainer.model_size, generator=generator)
        assert peers.add(peer, compressor.compress(noise).to_bytes())

    taken: list[AppliedUpdates] = []
    take = peers.take

    def spy() -> AppliedUpdates | None:
        applied = take()
        taken.extend([applied] if applied is not None else [])
        return applied

    peers.take = spy  # type: ignore[method-assign]
    peer_publishes(MiningStats())
    rig.miner().train(trainer, max_iterations=40, progress=peer_publishes)
    # 23 batches an epoch: segments start at (0, 16), (1, 0) and (1, 16), not at (0, 0)
    assert len(taken) == 3, "corrections are applied at segment starts only"
    assert not rig.rejected
    after = [b for b in rig.blocks if decode_iteration_message(b.iteration_message).iteration >= 16]
    assert after or pytest.fail("no block mined after a correction")
    verifier = BlockVerifier(rig.params, rig.task_spec)  # another node's: it vouches for nothing
    for block in rig.blocks:
        verifier.reexecute(block)


def test_with_a_defence_nothing_is_applied_until_it_can_judge() -> None:
    """Two updates give the screen nothing to judge by: a boosted one would go into the
    average unscreened. With a quorum of three the miner waits for the third."""
    clock = Clock()
    peers = PeerUpdates(
        OWN, [OWN, PEER, ATTACKER], SIZE, defence=defence("robust"), every_s=1.0, clock=clock,
        quorum=3,
    )  # fmt: skip
    peers.add(OWN, encoded([1, 1]))
    peers.add(ATTACKER, boosted(100))
    clock.now = 1.0
    assert peers.take() is None, "itself and one peer: no quorum"
    peers.add(PEER, encoded([-1, -1]))
    applied = peers.take()
    assert applied is not None and applied.miners == 2, "the boosted update screened out"
    assert torch.allclose(applied.correction[:2], torch.full((2,), -TAU))  # mean 0, own TAU
