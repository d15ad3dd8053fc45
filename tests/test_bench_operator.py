"""`pouw bench operator` loads its in-memory API server from the source checkout
(tests/support/emulator.py, over kmock): where that cannot be loaded, as in an image built with
`pip install .`, it says what to install in one line and exits with status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pouw.bench import operator as bench_operator
from pouw.bench.operator import EMULATOR_MODULE, NEEDS_DEV, Unavailable, load_emulator
from pouw.cli import main


def test_without_the_emulator_the_bench_says_what_to_install_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_operator, "EMULATOR", tmp_path / "no-checkout" / "emulator.py")
    result = CliRunner().invoke(main, ["bench", "operator", "--json"])
    assert result.exit_code == 2
    assert result.stderr == NEEDS_DEV + "\n"
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_without_kmock_the_emulator_is_unavailable_too(tmp_path: Path) -> None:
    emulator = tmp_path / "emulator.py"
    emulator.write_text("import kmock_of_a_dev_install_only\n")
    with pytest.raises(Unavailable, match=r"pip install -e '\.\[dev\]'"):
        load_emulator(emulator)
    assert EMULATOR_MODULE not in sys.modules


def test_a_missing_module_of_our_own_is_a_bug_not_a_missing_extra(tmp_path: Path) -> None:
    emulator = tmp_path / "emulator.py"
    emulator.write_text("import pouw_operator.no_such_module\n")
    with pytest.raises(ModuleNotFoundError, match=r"pouw_operator\.no_such_module"):
        load_emulator(emulator)


def test_the_checkouts_emulator_loads_from_its_file() -> None:
    server = load_emulator()
    assert server.__name__ == "EmulatorServer"
    assert Path(sys.modules[EMULATOR_MODULE].__file__ or "") == bench_operator.EMULATOR
