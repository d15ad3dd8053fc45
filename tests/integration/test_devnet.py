"""A real multi-process devnet: separate `pouw node` processes talking ZeroMQ on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pouw.api.client import ApiError
from pouw.devnet import BUILTIN_TASKS, Devnet, NodePlan, free_ports
from pouw.devnet_report import verify_data_dirs

pytestmark = pytest.mark.slow


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("devnet")
    network = Devnet(root, nodes=6, task=BUILTIN_TASKS["digits"])
    try:
        summary = network.run(lambda snapshot: None, timeout=300)
        yield network, summary
    finally:
        network.stop()


def tip_of(network: Devnet, node_id: str) -> str:
    try:
        status: dict[str, Any] = network.processes[node_id].client.status()
    except (ApiError, OSError):
        return ""
    return str(status["tip"])


def test_the_task_completes_above_the_accuracy_bar(devnet: tuple[Devnet, dict[str, Any]]) -> None:
    _, summary = devnet
    assert summary["task_state"] == "completed", summary
    assert summary["test_accuracy"] >= 0.90
    assert summary["task_blocks"] > 0
    assert summary["blocks_rejected"] == 0


def test_the_verifier_re_executed_every_main_chain_block(
    devnet: tuple[Devnet, dict[str, Any]],
) -> None:
    network, _ = devnet
    verifier = network.processes["verifier"].client
    height = verifier.status()["blockchain_height"]
    assert height > 0
    unverified = [h for h in range(1, height + 1) if verifier.block(h)["verified"] is not True]
    assert unverified == []


def test_rewards_reach_the_workers_on_chain(devnet: tuple[Devnet, dict[str, Any]]) -> None:
    network, summary = devnet
    task = network.processes["client"].client.task(summary["task_id"])
    assert task["model_available"] and task["best_model_hash"]
    model = network.processes["client"].client.task_model(summary["task_id"])
    assert len(model) > 1000
    for node_id in ("evaluator", "miner-0"):
        assert summary["rewards"][node_id] > 0, node_id
    for node_id in ("supervisor", "verifier"):
        assert summary["rewards"][node_id] == 0, f"{node_id}: no duty the ledger checks, no pay"


def test_a_late_node_syncs_to_the_same_tip(devnet: tuple[Devnet, dict[str, Any]]) -> None:
    network, _ = devnet
    p2p, api = free_ports(2)
    network.spawn(NodePlan("late", "PEER", p2p, api, 0.0))
    wait_until(
        lambda: tip_of(network, "late") == tip_of(network, "supervisor") != "",
        timeout=60,
        what="the late node to reach the supervisor's tip",
    )


def test_a_killed_miner_restarts_and_rejoins(devnet: tuple[Devnet, dict[str, Any]]) -> None:
    network, _ = devnet
    miner = network.processes["miner-0"]
    os.kill(miner.process.pid, signal.SIGKILL)
    miner.process.wait()
    height_before = network.processes["supervisor"].client.status()["blockchain_height"]
    network.spawn(miner.plan)
    wait_until(
        lambda: (
            tip_of(network, "miner-0") == tip_of(network, "supervisor") != ""
            and network.processes["supervisor"].client.status()["blockchain_height"] > height_before
        ),
        timeout=90,
        what="the restarted miner to rejoin and the chain to grow",
    )


def test_every_data_dir_verifies_after_a_clean_stop(
    devnet: tuple[Devnet, dict[str, Any]], tmp_path: Path
) -> None:
    network, _ = devnet
    network.stop()
    verdicts = verify_data_dirs(network.root, network.processes)
    assert all(v.startswith("ok") for v in verdicts.values()), verdicts
