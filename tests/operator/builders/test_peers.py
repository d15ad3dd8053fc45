"""Bootstrap peers: the supervisors of a namespace and the addresses of their pods."""

from __future__ import annotations

import pytest

from pouw_operator.builders.peers import Supervisor, bootstrap_peers, supervisors_of
from pouw_operator.resources import NodeResource, PoUWNodeSpec
from tests.operator.builders.manifests import (
    NAMESPACE,
)


@pytest.mark.parametrize(
    ("supervisors", "self_name", "peers"),
    [
        ([], "miner", ""),
        ([Supervisor("sup", 1)], "miner", "sup-0.sup.net.svc:8000"),
        (
            [Supervisor("sup", 2)],
            "miner",
            "sup-0.sup.net.svc:8000,sup-1.sup.net.svc:8000",
        ),
        ([Supervisor("sup", 2)], "sup", ""),  # a supervisor does not list itself
        (
            [Supervisor("zeta", 1), Supervisor("alpha", 1), Supervisor("sup", 2)],
            "sup",
            "alpha-0.alpha.net.svc:8000,zeta-0.zeta.net.svc:8000",
        ),
        ([Supervisor("idle", 0)], "miner", ""),  # scaled to zero: no pods to dial
    ],
)
def test_bootstrap_peers_are_the_other_supervisors_pods(
    supervisors: list[Supervisor], self_name: str, peers: str
) -> None:
    assert bootstrap_peers(supervisors, NAMESPACE, self_name) == peers


def test_supervisors_are_picked_from_nodes_with_their_replicas() -> None:
    nodes = [
        NodeResource("m", NAMESPACE, "1", PoUWNodeSpec(role="miner", replicas=4)),
        NodeResource("s2", NAMESPACE, "2", PoUWNodeSpec(role="supervisor", replicas=3)),
        NodeResource("s1", NAMESPACE, "3", PoUWNodeSpec(role="supervisor")),
        NodeResource("bad", NAMESPACE, "4", PoUWNodeSpec(role="supervisor", replicas=-1)),
    ]
    assert supervisors_of(nodes) == [Supervisor("s1", 1), Supervisor("s2", 3)]
