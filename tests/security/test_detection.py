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
from pouw.security.detection import SenderScreen, UpdateScreen
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


@pytest.mark.parametrize(("kind", "rate"), [("sign_flip", 0.9), ("scale", 1.0), ("noise", 0.85)])
def test_the_screen_flags_the_two_attackers(
    rounds: list[list[torch.Tensor]], kind: str, rate: float
) -> None:
    screen = UpdateScreen()
    assert screen.screen(attacked(kind, rounds[20])) == EXPECTED
    flags = [screen.screen(attacked(kind, honest, seed)) for seed, honest in enumerate(rounds)]
    caught = sum(flag[worker] for flag in flags for worker in ATTACKERS)
    false_alarms = sum(flag[worker] for flag in flags for worker in range(5))
    # One round alone cannot catch every attack: an honest gradient that happens to point
    # away from the others is, flipped, no outlier, and noise is only 3x longer than an
    # update (SenderScreen catches both over a window).
    assert caught >= rate * len(ATTACKERS) * len(rounds)
    assert false_alarms == 0


def test_the_screen_flags_no_honest_update(rounds: list[list[torch.Tensor]]) -> None:
    screen = UpdateScreen()
    flagged = [index for index, honest in enumerate(rounds) if any(screen.screen(honest))]
    assert flagged == []


def test_a_little_is_enough_hides_from_the_screen(rounds: list[list[torch.Tensor]]) -> None:
    """By design (Baruch et al. 2019): the mean of the unflagged updates, not the screen,
    bounds it (two of seven in a mean; multi-Krum would give it two of five)."""
    assert not any(UpdateScreen().screen(attacked("little_is_enough", rounds[10])))


def test_the_reasons_are_the_norm_and_the_direction(rounds: list[list[torch.Tensor]]) -> None:
    screen = UpdateScreen()
    scaled = screen.scores(attacked("scale", rounds[5]))
    flipped = screen.scores(attacked("sign_flip", rounds[5]))
    for worker in ATTACKERS:
        assert scaled[worker].norm_ratio > screen.max_norm_ratio
        assert scaled[worker].cosine > screen.min_cosine
        assert flipped[worker].cosine < screen.min_cosine


def test_too_few_updates_are_never_flagged() -> None:
    update = torch.ones(8)
    assert UpdateScreen().screen([update, -100 * update]) == [False, False]
    assert SenderScreen().screen(["a", "b"], [update, -100 * update]) == [False, False]


@pytest.mark.parametrize("kind", ["sign_flip", "scale", "noise"])
def test_the_sender_screen_flags_a_consistent_attacker_every_round(
    rounds: list[list[torch.Tensor]], kind: str
) -> None:
    screen = SenderScreen()
    senders = [f"miner-{worker}" for worker in range(MINERS)]
    flags = [
        screen.screen(senders, attacked(kind, honest, seed)) for seed, honest in enumerate(rounds)
    ]
    # Until a sender has a full window it is judged round by round (see the test above).
    assert flags[screen.window - 1 :] == [EXPECTED] * (len(rounds) - screen.window + 1)
    assert not any(flag[worker] for flag in flags for worker in range(5))


def test_the_sender_screen_flags_no_honest_sender(rounds: list[list[torch.Tensor]]) -> None:
    screen = SenderScreen()
    senders = list(range(MINERS))
    assert not any(any(screen.screen(senders, honest)) for honest in rounds)


def test_the_sender_screen_averages_out_one_unlucky_round() -> None:
    """One outlying round among honest ones is not enough to flag a sender."""
    generator = torch.Generator().manual_seed(3)
    truth = torch.randn(512, generator=generator)
    screen = SenderScreen(window=10)
    for index in range(10):
        updates = [truth + 0.5 * torch.randn(512, generator=generator) for _ in range(MINERS)]
        if index == 9:
            updates[0] = -updates[0]
        flags = screen.screen(range(MINERS), updates)
    assert flags == [False] * MINERS
    assert UpdateScreen().screen(updates)[0], "a round alone would have flagged it"


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
        assert screen.screen(range(MINERS), updates)[0]
    screen.forget(0)
    updates = [truth + 0.1 * torch.randn(256, generator=generator) for _ in range(MINERS)]
    assert not screen.screen(range(MINERS), updates)[0]
