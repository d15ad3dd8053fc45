"""The PoUWNode as the operator reads it: a body in, its spec with defaults out, or why not."""

from __future__ import annotations

from typing import Any

import pytest

from pouw_operator.resources import NodeResource, NodeSpec


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"role": "wizard"}, "unknown role"),
        ({"role": "miner", "replicas": -1}, "replicas"),
        ({"role": "miner", "resources": {"gpu": -2}}, "gpu"),
        ({"role": "miner", "miningIntensity": 2}, "miningIntensity"),
    ],
)
def test_a_spec_that_cannot_be_built_names_the_problem(spec: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NodeSpec.parse(spec)


def test_a_body_without_a_spec_is_a_node_with_no_role() -> None:
    pouw_node = NodeResource.from_body({"metadata": {"name": "x", "namespace": "y", "uid": "z"}})
    assert (pouw_node.name, pouw_node.namespace, pouw_node.uid) == ("x", "y", "z")
    with pytest.raises(ValueError, match="unknown role"):
        pouw_node.resolved  # noqa: B018
