"""`--fuzz-deep`: the same as POUW_FUZZ=deep (see tests/fuzz/__init__.py).

pytest reads options from the conftests it loads before parsing the command line: this one
when tests/fuzz (or a file in it) is named, as in `pytest tests/fuzz --fuzz-deep`. A bare
`pytest --fuzz-deep` needs the option in tests/conftest.py; POUW_FUZZ=deep works everywhere.
"""

from __future__ import annotations

import contextlib
import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):  # already added by a conftest above this one
        parser.addoption(
            "--fuzz-deep",
            action="store_true",
            default=False,
            help="run the fuzz tests with the `deep` hypothesis profile (many more cases)",
        )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz-deep", default=False):
        os.environ["POUW_FUZZ"] = "deep"
