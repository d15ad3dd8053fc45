"""Helpers of the builder tests: a PoUWNode of a spec, and manifests checked against the
Kubernetes OpenAPI schema (kubernetes-validate, strict: an unknown field fails)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]

from pouw_operator.builders.statefulset import GPU_RESOURCE
from pouw_operator.resources import NodeResource, PoUWNodeSpec
from pouw_operator.settings import OperatorSettings

K8S_VERSION = kubernetes_validate.latest_version()
SETTINGS = OperatorSettings(node_image="registry.example/pouw:1.0")
NAMESPACE = "net"
UID = "0b7f6c5e-0000-4000-8000-000000000001"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def node(name: str = "miner", /, **spec: Any) -> NodeResource:
    return NodeResource(name, NAMESPACE, UID, PoUWNodeSpec(role="miner", **spec))  # type: ignore[typeddict-item]


def valid(manifest: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return manifest


def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["node"]
    result: dict[str, Any] = containers[0]
    return result


def env(statefulset: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or -> valueFrom for references."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(statefulset)["env"]}


def counting_entropy() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda size: bytes([next(counter)]) * size


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])
