"""Screening a task's updates round by round: grouping, when a round is judged, who is flagged."""

from __future__ import annotations

import torch

from pouw.security.rounds import LAGGARD_ROUNDS, ROUNDS_PER_TASK, TaskScreen

SIZE = 200
MINERS = [bytes([i]) * 32 for i in range(4)]
DIRECTION = torch.randn(SIZE, generator=torch.Generator().manual_seed(0))


def honest(seed: int) -> torch.Tensor:
    """A minibatch update: the common descent direction plus its own noise."""
    noise = torch.randn(SIZE, generator=torch.Generator().manual_seed(seed))
    return DIRECTION + 0.5 * noise


def test_a_round_spans_enough_epochs_for_about_forty_rounds_a_task() -> None:
    assert TaskScreen(MINERS, epochs=800).epochs_per_round == 800 // ROUNDS_PER_TASK
    assert TaskScreen(MINERS, epochs=10).epochs_per_round == 1


def test_a_round_is_judged_once_every_miner_moved_past_it() -> None:
    screen = TaskScreen(MINERS[:3], epochs=40)
    for seed, miner in enumerate(MINERS[:3]):
        assert screen.add(miner, epoch=0, update=honest(seed)) == []
    assert screen.add(MINERS[0], epoch=1, update=honest(10)) == []
    assert screen.add(MINERS[1], epoch=1, update=honest(11)) == []
    (judged,) = screen.add(MINERS[2], epoch=1, update=honest(12))
    assert judged.round == 0 and set(judged.screened) == set(MINERS[:3])
    assert judged.flagged == ()


def test_a_miner_pushing_the_other_way_is_flagged_and_excluded() -> None:
    screen = TaskScreen(MINERS, epochs=40)
    judged = []
    for epoch in range(6):
        for index, miner in enumerate(MINERS):
            update = honest(100 * epoch + index)
            judged += screen.add(miner, epoch, -update if index == 3 else update)
    assert [j.round for j in judged] == [0, 1, 2, 3, 4]
    # Flagged once the screen has weighed enough agreement (MIN_EVIDENCE): from round 1.
    assert [j.flagged for j in judged] == [()] + [(MINERS[3],)] * 4
    assert screen.flagged_rounds[MINERS[3]] == 4 and screen.screened_rounds[MINERS[3]] == 5
    assert screen.excluded() == {MINERS[3]}


def test_a_round_sums_each_miners_updates_before_judging() -> None:
    """Each iteration alone is a tenth of the honest step; summed, it is as long as the rest."""
    screen = TaskScreen(MINERS[:3], epochs=40)
    for _ in range(10):
        screen.add(MINERS[0], 0, DIRECTION / 10)
    screen.add(MINERS[1], 0, DIRECTION)
    screen.add(MINERS[2], 0, DIRECTION * 1.1)
    for miner in MINERS[:3]:
        judged = screen.add(miner, 1, DIRECTION)
    assert [j.flagged for j in judged] == [()]


def test_a_laggard_is_left_out_once_three_miners_are_far_ahead() -> None:
    screen = TaskScreen(MINERS, epochs=40)
    screen.add(MINERS[3], 0, honest(3))  # then stalls
    judged = []
    for epoch in range(LAGGARD_ROUNDS + 1):
        for index, miner in enumerate(MINERS[:3]):
            judged += screen.add(miner, epoch, honest(10 * epoch + index))
    assert [j.round for j in judged] == [0]
    assert MINERS[3] not in judged[0].screened
    assert screen.add(MINERS[3], 0, honest(99)) == [], "still in round 0: not judged yet"


def test_a_slow_attacker_is_judged_late_on_every_round() -> None:
    """Its attack slows it down: three honest miners run LAGGARD_ROUNDS ahead, so each round
    is judged without it; as it moves past each one, its sum is judged against that round's
    reference, and it is flagged (once the evidence suffices) and excluded all the same."""
    screen = TaskScreen(MINERS, epochs=40)
    judged = []
    for epoch in range(8):
        for index, miner in enumerate(MINERS[:3]):
            judged += screen.add(miner, epoch, honest(100 * epoch + index))
        if epoch >= LAGGARD_ROUNDS:
            slow = epoch - LAGGARD_ROUNDS
            judged += screen.add(MINERS[3], slow, -honest(100 * slow + 3))
    late = [j for j in judged if j.screened == (MINERS[3],)]
    assert [j.round for j in late] == list(range(8 - LAGGARD_ROUNDS - 1))
    assert [j.flagged for j in late[1:]] == [(MINERS[3],)] * (len(late) - 1)
    assert all(MINERS[3] not in j.screened for j in judged if j not in late)
    assert screen.excluded() == {MINERS[3]}
    honest_late = TaskScreen(MINERS, epochs=40)
    for epoch in range(8):
        for index, miner in enumerate(MINERS[:3]):
            honest_late.add(miner, epoch, honest(100 * epoch + index))
        if epoch >= LAGGARD_ROUNDS:
            honest_late.add(MINERS[3], epoch - LAGGARD_ROUNDS, honest(7 + epoch))
    assert honest_late.screened_rounds[MINERS[3]] > 0 and not honest_late.flagged_rounds[MINERS[3]]


def test_fewer_than_three_updates_are_not_judged() -> None:
    screen = TaskScreen(MINERS[:2], epochs=40)
    for epoch in range(3):
        assert screen.add(MINERS[0], epoch, honest(epoch)) == []
        assert screen.add(MINERS[1], epoch, -honest(epoch)) == []
    assert screen.excluded() == set() and not screen.screened_rounds


def test_a_final_model_closes_the_miners_remaining_rounds() -> None:
    screen = TaskScreen(MINERS[:3], epochs=40)
    for index, miner in enumerate(MINERS[:3]):
        screen.add(miner, 0, honest(index))
    assert screen.finish(MINERS[0]) == [] and screen.finish(MINERS[1]) == []
    (judged,) = screen.finish(MINERS[2])
    assert judged.round == 0
    assert screen.finish(MINERS[2]) == []


def test_updates_from_outside_the_draw_are_ignored() -> None:
    screen = TaskScreen(MINERS[:3], epochs=40)
    stranger = b"\xff" * 32
    assert screen.add(stranger, 5, honest(0)) == [] and screen.finish(stranger) == []
    assert stranger not in screen.screened_rounds
