"""`pouw devnet --json`: the main job's contract, run as a person runs it."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pouw.blockchain.audit import audit_store
from pouw.mining.claims import ClaimRule

pytestmark = pytest.mark.slow
DEVNET = [sys.executable, "-m", "pouw.cli", "devnet"]


def test_devnet_ends_with_the_promised_json_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEVNET, "--nodes", "5", "--task", "iris", "--json", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    required = {"task_state", "test_accuracy", "height", "blocks_verified", "blocks_rejected"}
    assert required | {"nodes"} <= set(summary)
    assert summary["task_state"] == "completed" and summary["nodes"] == 5
    assert summary["chain_verified"] and summary["blocks_rejected"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["supervisor", "verifier", "evaluator", "miner-0", "client"]
    )


def _heights(root: Path, names: list[str]) -> list[int]:
    heights = []
    for name in names:
        try:
            report = audit_store(root / name, seal_rules=(), claim_rule=ClaimRule())
        except (OSError, sqlite3.Error):  # not created yet, or its schema is being written
            return []
        heights.append(report.height if report.ok else -1)
    return heights


def _children_of(root: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("POUW_DATA_DIR", "").startswith(str(root)):
                found.append(process)
    return found


def test_ctrl_c_stops_every_node_and_leaves_every_store_verifiable(tmp_path: Path) -> None:
    names = ["supervisor", "verifier", "evaluator", "miner-0", "client"]
    devnet = subprocess.Popen(
        [*DEVNET, "--nodes", "5", "--task", "digits", "--json", "--data", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (heights := _heights(tmp_path, names)) or min(heights) < 2:
            assert devnet.poll() is None, "the devnet ended before it was interrupted"
            assert time.monotonic() < deadline, f"no blocks on every node in time: {heights}"
            time.sleep(0.5)
        devnet.send_signal(signal.SIGINT)
        stdout, _ = devnet.communicate(timeout=120)
        left_running = _children_of(tmp_path)
    finally:
        if devnet.poll() is None:
            devnet.kill()
        for leftover in _children_of(tmp_path):  # so that a failed run leaks no node
            with contextlib.suppress(psutil.Error):
                leftover.kill()
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["task_state"] == "interrupted" and summary["chain_verified"]
    assert left_running == []
    assert all(height >= 2 for height in _heights(tmp_path, names))
