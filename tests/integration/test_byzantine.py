"""Byzantine miners in a real multi-process devnet: detected, scored down, slashed with evidence.

Two small devnets (iris): three miners of which one flips the sign of its updates, and two
miners of which one fakes its work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pouw.bench.consensus import blocks_by
from pouw.devnet import BUILTIN_TASKS, STAKE, Devnet, Snapshot, with_epochs

pytestmark = pytest.mark.slow
TIMEOUT_S = 240
FAKE_WORK_EPOCHS = 4800
"""About 20 task blocks (3,200 epochs made 13): the chance that the attacker wins none is tiny."""


def ignore(snapshot: Snapshot) -> None:
    del snapshot


@contextlib.contextmanager
def devnet(
    root: Path, nodes: int, attack: str, epochs: int
) -> Iterator[tuple[Devnet, dict[str, Any]]]:
    """A devnet with one attacker, run until its task closes; stopped on leaving."""
    network = Devnet(
        root, nodes, with_epochs(BUILTIN_TASKS["iris"], epochs), byzantine=1, attack=attack
    )
    try:
        yield network, network.run(ignore, timeout=TIMEOUT_S)
    finally:
        network.stop()


@pytest.fixture(scope="module")
def sign_flip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Seven nodes: three miners, the minimum for a median to outvote one attacker. Its tests
    need only the summary, so the network stops before the next one starts."""
    with devnet(tmp_path_factory.mktemp("sign_flip"), 7, "sign_flip", epochs=200) as (_, summary):
        return summary


def fake_work_detected(snapshot: Snapshot) -> bool:
    return any(
        status.get("stats", {}).get("attacks_detected", {}).get("fake_work", 0) > 0
        for status in snapshot.statuses.values()
    )


@pytest.fixture(scope="module")
def fake_work(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Devnet, dict[str, Any]]]:
    """Six nodes, two miners. Which miner wins a block is chance, and the attacker is slashed
    at its first fake one: the task is long (about 20 blocks), and the network runs until the
    attacker has been caught and then until the task closes."""
    task = with_epochs(BUILTIN_TASKS["iris"], FAKE_WORK_EPOCHS)
    network = Devnet(tmp_path_factory.mktemp("fake_work"), 6, task, byzantine=1, attack="fake_work")
    try:
        network.start(ignore, TIMEOUT_S)
        network.submit()
        network.wait_for("catching the fake worker", fake_work_detected, TIMEOUT_S, ignore)
        network.wait_until_closed(ignore, TIMEOUT_S)
        network.await_one_tip(ignore)
        yield network, network.summary()
    finally:
        network.stop()


def test_a_sign_flipping_miner_is_detected_and_scored_below_the_honest(
    sign_flip: dict[str, Any],
) -> None:
    summary = sign_flip
    assert summary["attackers"] == ["miner-2"]
    assert summary["attacks_detected"].get("anomalous_update", 0) >= 5, summary
    reputation = summary["reputation"]
    assert reputation["miner-2"] < 0.5 < min(reputation["miner-0"], reputation["miner-1"])
    assert summary["ranked"] and "miner-2" not in summary["ranked"], "left out of the payouts"


def test_the_task_still_completes_above_its_bar(sign_flip: dict[str, Any]) -> None:
    summary = sign_flip
    assert summary["task_state"] == "completed", summary
    assert summary["test_accuracy"] >= summary["min_accuracy"]
    assert summary["blocks_rejected"] == 0, "an update attack leaves the blocks honest"
    assert summary["slashed_stake"] == {}


def test_fake_work_is_rejected_and_its_stake_slashed_on_chain(
    fake_work: tuple[Devnet, dict[str, Any]],
) -> None:
    network, summary = fake_work
    assert summary["attackers"] == ["miner-1"]
    assert summary["blocks_rejected"] >= 1 and summary["attacks_detected"]["fake_work"] >= 1
    assert summary["slashed_stake"] == {"miner-1": STAKE}
    assert summary["tips_agree"], summary
    fake_miner = network.processes["miner-1"].client.economics()["address"]
    for node_id in network.processes:
        if node_id != "miner-1":  # no honest main chain holds a block of its fake work
            assert blocks_by(network.root / node_id, fake_miner, summary["task_id"]) == 0
    attacker = network.processes["miner-1"].client.economics()
    assert attacker["locked"] == 0 and not attacker["staked"]
    # Reputation is not compared here: a fake worker's updates are honest, and with two miners
    # the honest one's score moves by chance as much as the slash moves the attacker's.
    assert summary["task_state"] == "completed", summary


def test_the_slash_is_a_mined_transaction(fake_work: tuple[Devnet, dict[str, Any]]) -> None:
    network, _ = fake_work
    supervisor = network.processes["supervisor"].client
    height = supervisor.status()["blockchain_height"]
    kinds = [tx["kind"] for h in range(1, height + 1) for tx in supervisor.block(h)["transactions"]]
    assert kinds.count("slash") == 1
