"""The seed README's snippets, as runnable files in examples/, run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("first_miner.py", "Blocks mined:"),
        ("multi_node_network.py", "Network started with 1 supervisor + 3 miners"),
        ("task_submission.py", "is on chain at height"),
        ("monitoring.py", "Economic Status:"),
    ],
)
def test_an_example_runs_as_written(name: str, expected: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
