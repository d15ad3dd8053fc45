"""The screens flag Byzantine updates among real gradients of the digits MLP, and leave honest
ones alone (pouw.security.detection)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pouw.ml.datasets import Dataset, epoch_order, load_dataset, shard_indices
from pouw.ml.models import build_model
from pouw.security.attacks import attack_update
from pouw.security.detection import SenderScreen, round_scores
from pouw.spec import DatasetSpec, ModelSpec

MINERS = 7
ATTACKERS = (5, 6)
BATCH = 64
LEARNING_RATE = 0.2


class Digits:
    """Seven miners' shards of digits and the demo MLP 64-128-64-10, trained by the mean of
    their gradients (a small copy of what `pouw bench attacks` runs)."""

    def __init__(self) -> None:
        self.dataset: Dataset = load_dataset(DatasetSpec(name="digits"))
        self.model = build_model(ModelSpec(layers=(64, 128, 64, 10)), seed=b"security-tests")
        self.shards = [
            shard_indices(len(self.dataset.y_train), worker, MINERS) for worker in range(MINERS)
        ]

    def gradients(self, step: int) -> list[torch.Tensor]:
        grads = []
        for shard in self.shards:
            epoch, offset = divmod(step * BATCH, len(shard) - len(shard) % BATCH)
            rows = epoch_order(shard, epoch, b"security-tests")[offset : offset + BATCH]
            x, y = self.dataset.x_train[rows], self.dataset.y_train[rows]
            loss = F.cross_entropy(self.model(x), y)
            parts = torch.autograd.grad(loss, list(self.model.parameters()))
            grads.append(torch.cat([part.reshape(-1) for part in parts]))
        return grads

    def step(self, update: torch.Tensor) -> None:
        with torch.no_grad():
            vector = nn.utils.parameters_to_vector(self.model.parameters())
            nn.utils.vector_to_parameters(vector - LEARNING_RATE * update, self.model.parameters())


@pytest.fixture(scope="module")
def rounds() -> list[list[torch.Tensor]]:
    """Honest gradients of 40 training rounds (mean aggregation, no attackers)."""
    digits = Digits()
    history = []
    for step in range(40):
        grads = digits.gradients(step)
        history.append(grads)
        digits.step(torch.stack(grads).mean(dim=0))
    return history


def attacked(kind: str, honest: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    updates = list(honest)
    for worker in ATTACKERS:
        updates[worker] = attack_update(
            kind, honest[worker], peers=honest, generator=generator, workers=MINERS, byzantine=2
        )
    return updates


EXPECTED = [worker in ATTACKERS for worker in range(MINERS)]


def screened(kind: str | None, rounds: list[list[torch.Tensor]]) -> list[list[bool]]:
    screen = SenderScreen()
    senders = [f"miner-{worker}" for worker in range(MINERS)]
    return [
        screen.screen(senders, attacked(kind, honest, seed) if kind else honest)
        for seed, honest in enumerate(rounds)
    ]


@pytest.mark.parametrize("kind", ["sign_flip", "scale", "noise", "ipm"])
def test_the_screen_flags_a_consistent_attacker_and_no_honest_sender(
    rounds: list[list[torch.Tensor]], kind: str
) -> None:
    flags = screened(kind, rounds)
    # Every round once a few informative rounds have been weighed (MIN_EVIDENCE).
    assert flags[5:] == [EXPECTED] * (len(rounds) - 5)
    assert not any(flag[worker] for flag in flags for worker in range(5))


def test_the_screen_flags_no_honest_sender(rounds: list[list[torch.Tensor]]) -> None:
    assert not any(any(flags) for flags in screened(None, rounds))


def test_a_little_is_enough_hides_from_the_screen(rounds: list[list[torch.Tensor]]) -> None:
    """By design (Baruch et al. 2019): the defence's aggregation, not the screen, bounds it."""
    assert not any(any(flags) for flags in screened("little_is_enough", rounds))


def test_too_few_updates_are_never_flagged() -> None:
    update = torch.ones(8)
    assert SenderScreen().screen(["a", "b"], [update, -100 * update]) == [False, False]


def test_one_unlucky_round_does_not_flag_an_honest_sender() -> None:
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(512, generator=generator)
    screen = SenderScreen()
    for index in range(10):
        updates = [truth + 0.5 * torch.randn(512, generator=generator) for _ in range(MINERS)]
        if index == 9:
            updates[0] = -updates[0]
        flags = screen.screen(range(MINERS), updates)
    assert flags == [False] * MINERS


def test_an_update_ten_times_the_median_length_is_flagged_at_once() -> None:
    generator = torch.Generator().manual_seed(5)
    truth = torch.randn(256, generator=generator)
    updates = [truth + 0.1 * torch.randn(256, generator=generator) for _ in range(MINERS)]
    updates[6] = 11 * updates[6]
    assert SenderScreen().screen(range(MINERS), updates) == [False] * 6 + [True]


def test_colluders_once_caught_no_longer_vouch_for_each_other() -> None:
    """Two attackers sending one flipped vector support each other's cosine while they are
    trusted; once flagged they are left out of the references, so they stay flagged."""
    generator = torch.Generator().manual_seed(6)
    truth = torch.randn(256, generator=generator)
    screen = SenderScreen()
    for _ in range(20):
        updates = [truth + 0.3 * torch.randn(256, generator=generator) for _ in range(MINERS)]
        flipped = -torch.stack(updates[:5]).mean(dim=0)
        updates[5] = updates[6] = flipped
        flags = screen.screen(range(MINERS), updates)
    assert flags == EXPECTED
    assert (screen.direction(5) or 0.0) < 0 < (screen.direction(0) or 0.0)


def test_credit_banked_by_sending_the_honest_mean_does_not_pay_for_attacks() -> None:
    """The honest mean agrees with the others far better than any honest update does; an
    attacker sending it two rounds in three and its negation the third would keep a direction
    score like an honest sender's. A round credits no sender more than the round's agreement."""
    generator = torch.Generator().manual_seed(7)
    truth = torch.randn(512, generator=generator)
    screen = SenderScreen()
    flags = []
    for index in range(30):
        updates = [truth + 2 * torch.randn(512, generator=generator) for _ in range(MINERS)]
        mean = torch.stack(updates[:5]).mean(dim=0)
        updates[5] = updates[6] = -0.25 * mean if index % 3 == 2 else mean
        flags.append(screen.screen(range(MINERS), updates))
    assert flags[-1] == EXPECTED
    assert not any(flag[worker] for flag in flags for worker in range(5))


def test_copies_of_an_update_are_left_out_of_the_references() -> None:
    """Senders resending another's update (mimic) would make it most of the round's reference;
    a copy is scored like any update, but it is no vote in the reference."""
    generator = torch.Generator().manual_seed(8)
    truth = torch.randn(256, generator=generator)
    honest = [truth + 2 * torch.randn(256, generator=generator) for _ in range(5)]
    copied, _ = round_scores([*honest, honest[0], honest[0]])
    left_out, _ = round_scores([*honest, honest[0], honest[0]], trusted=[True] * 5 + [False] * 2)
    counted, _ = round_scores([*honest, honest[0], honest[0].clone() + 1e-3])
    assert copied == left_out
    assert copied[5] == copied[6] == copied[0]
    assert counted[1].cosine < copied[1].cosine, "counted, copies pull the reference their way"


def test_colluders_cannot_make_the_rounds_they_attack_weigh_nothing() -> None:
    """Late in training honest updates are mostly noise. Three of ten attackers sending one
    honest-length vector against the mean dominated a plain mean of the others: every honest
    cosine fell to about 0, the round weighed nothing, and the attack cost the attackers no
    evidence. Scored against the robust aggregate, the round weighs what it would without
    them and the attackers' cosines count against them."""
    generator = torch.Generator().manual_seed(9)
    truth = torch.randn(1024, generator=generator)
    honest = [truth + 4 * torch.randn(1024, generator=generator) for _ in range(7)]
    mean = torch.stack(honest).mean(dim=0)
    against = -mean / mean.norm() * honest[0].norm()
    alone, _ = round_scores(honest)
    attacked, _ = round_scores([*honest, against, against, against])
    assert attacked[0].weight > 0.5 * alone[0].weight > 0
    assert all(score.cosine > 0 for score in attacked[:7])
    assert all(score.cosine < 0 for score in attacked[7:])


def test_the_sender_screen_refuses_bad_input() -> None:
    update = torch.ones(8)
    with pytest.raises(ValueError, match="senders"):
        SenderScreen().screen(["a"], [update, update, update])
    with pytest.raises(ValueError, match="each sender once"):
        SenderScreen().screen(["a", "a", "b"], [update, update, update])
    with pytest.raises(ValueError, match="window"):
        SenderScreen(window=0)


def test_forgetting_a_sender_clears_its_history() -> None:
    generator = torch.Generator().manual_seed(4)
    truth = torch.randn(256, generator=generator)
    screen = SenderScreen(window=5)
    for _ in range(5):
        updates = [truth + 0.1 * torch.randn(256, generator=generator) for _ in range(MINERS)]
        updates[0] = -updates[0]
        flags = screen.screen(range(MINERS), updates)
    assert flags[0]
    screen.forget(0)
    updates = [truth + 0.1 * torch.randn(256, generator=generator) for _ in range(MINERS)]
    assert not screen.screen(range(MINERS), updates)[0]
