"""kill -9 at random points of a multi-process devnet run, and restarts on the same data dirs.

A six-node devnet (supervisor, verifier, evaluator, two miners, client) trains the client's
task while a seeded plan SIGKILLs miners, the supervisor and the verifier, a dozen times at
random moments, each restarted at once on its data dir. Never both miners are down at once
(a miner waits for the other to answer again before it is killed). The evaluator and the
client are spared here: they are the task's judge and owner, whose API the outcome is read
from (the evaluator's own restart is the second test).

Afterwards: every killed store passed `pouw chain verify` right after its kill, before the
restart touched it; the task completes above its accuracy bar; every node reaches one tip;
and every data dir verifies after a clean stop.

A second run kills the evaluator the moment it has stored a miner's final model, before it can
rank them: restarted, it finds the models in its data dir and closes the task.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pouw.api.client import ApiError
from pouw.blockchain.audit import audit_store
from pouw.devnet import BUILTIN_TASKS, TASK_REWARD, Devnet, with_epochs
from pouw.devnet_report import verify_data_dirs
from pouw.mining.claims import ClaimRule

pytestmark = pytest.mark.slow

SEED = 20_260_611
VICTIMS = ("miner-0", "miner-1", "supervisor", "verifier")
KILLS_EACH = 3
MINERS = ("miner-0", "miner-1")
PAUSE_S = (0.5, 2.5)
"""The gap before each kill, drawn uniformly: kills land at random points of the run."""
EPOCHS = 200
"""Digits for 200 epochs instead of 300: the kills come in the first 20 s, before a miner has
saved its trainer (every 10 s), so a killed miner mostly retrains from the start."""


@dataclass(frozen=True)
class Kill:
    victim: str
    after_s: float
    """Seconds since the task was paid for."""
    height: int
    """The victim's store tip when it was killed."""
    verdict: str


def kill_plan(seed: int) -> list[tuple[float, str]]:
    """(pause, victim) pairs: every victim KILLS_EACH times, in a seeded random order."""
    rng = random.Random(seed)
    victims = [victim for victim in VICTIMS for _ in range(KILLS_EACH)]
    rng.shuffle(victims)
    return [(rng.uniform(*PAUSE_S), victim) for victim in victims]


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    explain: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{explain()}")
        time.sleep(0.2)


def status_of(network: Devnet, node_id: str) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = network.processes[node_id].client.status()
    except (ApiError, OSError):
        return None
    return status


def serving(network: Devnet, node_id: str) -> bool:
    """Up again: its API answers and it has a peer."""
    status = status_of(network, node_id)
    return status is not None and status["peer_count"] > 0


def assert_alive(network: Devnet) -> None:
    for node_id, node in network.processes.items():
        code = node.process.poll()
        if code is not None:
            tail = node.log_path.read_text(errors="replace").splitlines()[-20:]
            raise AssertionError(f"{node_id} exited with {code}:\n" + "\n".join(tail))


def task_closed(network: Devnet, task_id: str) -> bool:
    assert_alive(network)
    try:
        return network.processes["client"].client.task(task_id)["phase"] in ("completed", "failed")
    except (ApiError, OSError):
        return False


def kill_and_restart(network: Devnet, victim: str, started: float) -> Kill:
    node = network.processes[victim]
    os.kill(node.process.pid, signal.SIGKILL)
    node.process.wait()
    node.client.close()
    report = audit_store(
        node.data_dir, claim_rule=ClaimRule()
    )  # the store exactly as the kill left it
    network.spawn(node.plan)
    return Kill(victim, round(time.monotonic() - started, 1), report.height, report.describe())


def describe(network: Devnet, kills: list[Kill], task_id: str) -> str:
    """What a timeout shows: the kills, the task and every node's view."""
    lines = [f"{k.victim} killed at +{k.after_s} s, height {k.height}" for k in kills]
    try:
        lines.append(f"task: {network.processes['client'].client.task(task_id)}")
    except (ApiError, OSError) as error:
        lines.append(f"task: {error}")
    for node_id in network.processes:
        status = status_of(network, node_id) or {}
        lines.append(
            f"{node_id}: height {status.get('blockchain_height')} tip {status.get('tip', '')[:16]}"
            f" peers {status.get('peer_count')} mining {status.get('mining')!r}"
        )
    return "\n" + "\n".join(lines)


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    network = Devnet(tmp_path, nodes=6, task=with_epochs(BUILTIN_TASKS["digits"], EPOCHS))
    try:
        yield network
    finally:
        network.stop()


def test_a_devnet_survives_a_dozen_kill_9s_and_every_store_verifies(devnet: Devnet) -> None:
    network = devnet
    network.start(lambda snapshot: None, timeout=120)
    client = network.processes["client"].client
    spec = msgspec.to_builtins(network.task)
    task_id = client.submit_task(spec, reward=TASK_REWARD, request_id="faults-task")
    started = time.monotonic()

    kills: list[Kill] = []
    for pause, victim in kill_plan(SEED):
        time.sleep(pause)
        assert_alive(network)
        if victim in MINERS:  # never both miners down
            other = MINERS[1 - MINERS.index(victim)]
            wait_until(partial(serving, network, other), 60, f"{other} to be back before a kill")
        kills.append(kill_and_restart(network, victim, started))
    assert len(kills) >= 10 and {kill.victim for kill in kills} == set(VICTIMS)
    bad = [kill for kill in kills if not kill.verdict.startswith("chain OK")]
    assert bad == [], bad

    explain = partial(describe, network, kills, task_id)
    wait_until(partial(task_closed, network, task_id), 150, "the task to finish", explain)
    task = client.task(task_id)
    assert task["phase"] == "completed", task
    assert task["test_accuracy"] >= network.task.min_accuracy, task

    def one_tip() -> bool:
        tips = [(status_of(network, node_id) or {}).get("tip") for node_id in network.processes]
        return None not in tips and len(set(tips)) == 1

    wait_until(one_tip, 60, "every node to reach one tip", explain)
    assert all(serving(network, node_id) for node_id in network.processes), explain()

    network.stop()
    verdicts = verify_data_dirs(network.root, network.processes)
    assert all(verdict.startswith("ok") for verdict in verdicts.values()), verdicts


def test_an_evaluator_killed_holding_final_models_still_closes_the_task(tmp_path: Path) -> None:
    network = Devnet(tmp_path, nodes=6, task=with_epochs(BUILTIN_TASKS["iris"], 300))
    try:
        network.start(lambda snapshot: None, timeout=120)
        task_id = network.submit()
        evaluator = network.processes["evaluator"]
        stored = evaluator.data_dir / "models" / task_id

        def holds_a_final_model() -> bool:
            assert_alive(network)
            return any(stored.glob("*.final"))

        wait_until(holds_a_final_model, 150, "the evaluator to receive a final model")
        kill = kill_and_restart(network, "evaluator", time.monotonic())
        assert kill.verdict.startswith("chain OK"), kill
        explain = partial(describe, network, [kill], task_id)
        wait_until(partial(task_closed, network, task_id), 150, "the task to close", explain)
        task = network.processes["client"].client.task(task_id)
        assert task["phase"] == "completed", task
    finally:
        network.stop()
