"""What operator tests read back: resources to create, status, conditions and the operator's
metrics (the harness's own OperatorMetrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.operator.harness import OperatorCluster

Body = dict[str, Any]


def pouwnode(name: str, role: str = "peer", replicas: int = 1, **labels: str) -> Body:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"role": role, "replicas": replicas},
    }


def status_of(cluster: OperatorCluster, kind_plural: str, name: str) -> Body:
    found = cluster.get(kind_plural, name)
    return dict((found or {}).get("status") or {})


def condition_of(status: Body, type_: str) -> Body:
    """The condition of that type, {} when there is none."""
    return next((c for c in status.get("conditions") or () if c["type"] == type_), {})


def in_phase(
    cluster: OperatorCluster, kind_plural: str, name: str, wanted: str
) -> Callable[[], Body | None]:
    """For cluster.wait_for: the status once its phase is `wanted`."""

    def check() -> Body | None:
        status = status_of(cluster, kind_plural, name)
        return status if status.get("phase") == wanted else None

    return check


def with_condition(
    cluster: OperatorCluster, kind_plural: str, name: str, type_: str, **wanted: str
) -> Callable[[], Body | None]:
    """For cluster.wait_for: the condition of that type once it has the `wanted` fields
    (reason="NodeUnreachable", status="False", ...)."""

    def check() -> Body | None:
        found = condition_of(status_of(cluster, kind_plural, name), type_)
        return found if all(found.get(key) == value for key, value in wanted.items()) else None

    return check


def reconciles(cluster: OperatorCluster, kind: str, result: str) -> float:
    """pouw_operator_reconcile_total{kind, result}: ok, retry or error."""
    value = cluster.metrics.registry.get_sample_value(
        "pouw_operator_reconcile_total", {"kind": kind, "result": result}
    )
    return value or 0.0


def resources(cluster: OperatorCluster, kind: str, phase: str) -> float:
    """pouw_operator_resources{kind, phase}."""
    value = cluster.metrics.registry.get_sample_value(
        "pouw_operator_resources", {"kind": kind, "phase": phase}
    )
    return value or 0.0
