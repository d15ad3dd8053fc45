"""Fixtures of the operator suite. `operator_cluster` is the real operator against an
in-memory API server (tests/operator/harness.py); override `operator_settings` in a module
(or parametrize it indirectly) to start the operator with other settings.

`node`, `node_url` and `node_api_settings` are a scripted node behind the real node API
(tests/operator/node_api.py), for the MLTask and Stake tests: a module that pays through it
overrides `operator_settings` with `node_api_settings`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from pouw_operator.settings import OperatorSettings
from tests.operator.harness import FAST_SETTINGS, OperatorCluster
from tests.operator.harness import operator_cluster as running_cluster
from tests.operator.node_api import TOKEN, ScriptedNode, served


@pytest.fixture
def operator_settings() -> OperatorSettings | None:
    """None: FAST_SETTINGS (0.2 s polls) with a node_url nobody answers on."""
    return None


@pytest.fixture
def operator_cluster(operator_settings: OperatorSettings | None) -> Iterator[OperatorCluster]:
    with running_cluster(settings=operator_settings) as cluster:
        yield cluster


@pytest.fixture
def node() -> ScriptedNode:
    return ScriptedNode(balance=100.0)


@pytest.fixture
def node_url(node: ScriptedNode) -> Iterator[str]:
    with served(node) as url:
        yield url


@pytest.fixture
def node_api_settings(node_url: str) -> OperatorSettings:
    """FAST_SETTINGS aimed at the scripted node's API, with the token it expects."""
    return replace(FAST_SETTINGS, node_url=node_url, api_token=TOKEN)
