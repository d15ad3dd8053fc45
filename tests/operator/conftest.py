"""Fixtures of the operator suite. `operator_cluster` is the real operator against an
in-memory API server (tests/operator/harness.py); override `operator_settings` in a module
(or parametrize it indirectly) to start the operator with other settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pouw_operator.settings import OperatorSettings
from tests.operator.harness import OperatorCluster
from tests.operator.harness import operator_cluster as running_cluster


@pytest.fixture
def operator_settings() -> OperatorSettings | None:
    """None: FAST_SETTINGS (0.2 s polls) with a node_url nobody answers on."""
    return None


@pytest.fixture
def operator_cluster(operator_settings: OperatorSettings | None) -> Iterator[OperatorCluster]:
    with running_cluster(settings=operator_settings) as cluster:
        yield cluster
