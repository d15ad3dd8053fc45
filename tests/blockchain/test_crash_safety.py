"""kill -9 at random moments while a process writes blocks: the store always verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ledger import ledger_params, mine, open_chain

from pouw.blockchain.audit import audit_store

ROOT = Path(__file__).resolve().parents[2]
KILLS = 24


def start_writer(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.chain_writer", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for_heights(writer: subprocess.Popen[str], count: int, deadline_s: float = 60.0) -> None:
    assert writer.stdout is not None
    end = time.monotonic() + deadline_s
    seen = 0
    while seen < count:
        assert time.monotonic() < end, "writer made no progress"
        line = writer.stdout.readline()
        assert line, f"writer exited early with {writer.poll()}"
        seen += 1


def test_kill_9_at_random_points_leaves_a_verifiable_store(tmp_path: Path) -> None:
    rng = random.Random(20261124)
    data_dir = tmp_path / "node"
    last_height = 0
    for _ in range(KILLS):
        writer = start_writer(data_dir)
        wait_for_heights(writer, 1)
        time.sleep(rng.uniform(0.0, 0.15))  # the kill point: any moment inside a block write
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)

        report = audit_store(data_dir)
        assert report.ok, report.describe()
        assert report.height >= last_height - 1, "a reorg may shorten by one, never lose blocks"
        last_height = report.height

    chain = open_chain(data_dir, ledger_params())
    assert chain.height == last_height
    mine(chain)
    assert audit_store(data_dir).ok
