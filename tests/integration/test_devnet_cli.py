"""`pouw devnet --json`: the main job's contract, run as a person runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
