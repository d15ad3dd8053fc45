"""The Service builder: headless, checked against the Kubernetes OpenAPI schema."""

from __future__ import annotations

from pouw_operator.builders.service import build_service, service_owned_fields
from tests.operator.builders.manifests import (
    node,
    valid,
)


def test_the_service_is_headless_and_publishes_pods_before_they_are_ready() -> None:
    service = valid(build_service(node()))
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "pouw-node",
        "app.kubernetes.io/instance": "miner",
    }
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("p2p", 8000),
        ("api", 8080),
    ]
    assert "clusterIP" not in service_owned_fields(service)["spec"]
