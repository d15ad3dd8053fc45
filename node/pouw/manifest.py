"""Between an MLTask manifest and a task spec: the one mapping `pouw task submit` and the
operator share.

An MLTask's spec (camelCase, as Kubernetes writes it) holds the task spec's fields
(`pouw.spec.TaskSpec`, snake_case), the payment (`reward`, `fee`), the training settings
grouped under `hyperparameters`, and placement fields that say where the task goes rather than
what it is (the operator's business, dropped here). A plain task mapping in the spec's own
snake_case is accepted as well.

Only names move here; values are checked by the node's API (`POST /tasks`) and the spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pouw.errors import PouwError
from pouw.spec import DEFAULT_FEE

PLACEMENT = frozenset({"network", "networkSelector", "networkRef", "node", "nodeRef"})
HYPERPARAMETERS = ("learning_rate", "batch_size", "epochs", "tau")
"""The spec's fields an MLTask groups under `hyperparameters`."""
_UPPER = re.compile(r"(?<=[a-z0-9])([A-Z])")


class ManifestError(PouwError, ValueError):
    """A document no task can be read from: not a mapping, or no usable reward or fee."""


@dataclass(frozen=True)
class TaskOrder:
    """What a manifest asks the network for: a task spec and what is paid for it."""

    spec: dict[str, Any]
    """The task spec's fields, snake_case: the body of `POST /tasks` without the payment."""
    reward: float
    fee: float = DEFAULT_FEE


def task_order(document: object) -> TaskOrder:
    """The order in an MLTask manifest, an MLTask's spec, or a plain task mapping."""
    if not isinstance(document, Mapping):
        raise ManifestError(f"expected a mapping, got {type(document).__name__}")
    inner = document.get("spec")
    spec: Mapping[str, Any] = inner if isinstance(inner, Mapping) else document
    fields = {key: value for key, value in spec.items() if key not in PLACEMENT}
    grouped = fields.pop("hyperparameters", None)
    if isinstance(grouped, Mapping):
        fields = {**grouped, **fields}
    mapping: dict[str, Any] = snake_keys(fields)
    reward = mapping.pop("reward", None)
    fee = mapping.pop("fee", DEFAULT_FEE)
    if reward is None:
        raise ManifestError("the task needs a reward: the coins paid into its escrow")
    if not _is_number(reward) or not _is_number(fee):
        raise ManifestError("reward and fee must be numbers")
    return TaskOrder(mapping, float(reward), float(fee))


def mltask_spec(order: TaskOrder) -> dict[str, Any]:
    """The MLTask spec (camelCase) that `task_order` reads back as `order`."""
    fields = {key: value for key, value in order.spec.items() if key not in HYPERPARAMETERS}
    grouped = {key: value for key, value in order.spec.items() if key in HYPERPARAMETERS}
    spec: dict[str, Any] = camel_keys(fields)
    if grouped:
        spec["hyperparameters"] = camel_keys(grouped)
    return {**spec, "reward": order.reward, "fee": order.fee}


def snake_case(name: str) -> str:
    """learningRate -> learning_rate."""
    return _UPPER.sub(r"_\1", name).lower()


def camel_case(name: str) -> str:
    """learning_rate -> learningRate."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake_keys(value: Any) -> Any:
    """`value` with every mapping key, at any depth, in snake_case."""
    if isinstance(value, Mapping):
        return {snake_case(str(key)): snake_keys(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [snake_keys(item) for item in value]
    return value


def camel_keys(value: Any) -> Any:
    """`value` with every mapping key, at any depth, in camelCase."""
    if isinstance(value, Mapping):
        return {camel_case(str(key)): camel_keys(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(item) for item in value]
    return value


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):  # YAML may leave "5" quoted; float() reads it
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False
