"""One task spec: `pouw.spec.TaskSpec` is the definition, and this is the one place where the
API body (`pouw.api.schemas.TaskBody`), the CLI's YAML and the MLTask CRD are checked against
it: the same fields, types, enums, bounds and defaults, named through `pouw.manifest`."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
import yaml

from pouw.api.schemas import MAX_COINS, DatasetBody, ModelBody, TaskBody
from pouw.manifest import (
    HYPERPARAMETERS,
    ManifestError,
    TaskOrder,
    camel_case,
    mltask_spec,
    snake_case,
    task_order,
)
from pouw.spec import DEFAULT_FEE, DatasetSpec, ModelSpec, TaskSpec
from tests.operator.crd_schema import EXAMPLES_DIR, openapi_schema, to_json_schema

PAYMENT = {"reward", "fee"}
MLTASK_DEFAULTS = {"batch_size": 32, "miners": 1}
"""Defaults an MLTask sets apart from the spec's: a Kubernetes user's first task runs on one
miner with small batches (examples/mytask.yaml); `pouw task submit` and the API keep the
spec's."""

Shape = dict[str, Any]


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    return _resolve(root["$defs"][ref.rsplit("/", 1)[-1]], root)


def shape(node: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Shape:
    """What a JSON Schema node says about its values, in one comparable form: titles, text
    and the way an optional or enum value is spelled are left out."""
    root = root if root is not None else node
    node = _resolve(node, root)
    variants = node.get("anyOf")
    if variants is not None:
        (value,) = [v for v in variants if v.get("type") != "null"]
        return {**shape(value, root), "nullable": True, **_default(node)}
    out: Shape = {}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern"):
        if key in node:
            out[key] = node[key]
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "enum" in node:
        out["enum"] = frozenset(node["enum"])
    elif "type" in node:
        out["type"] = node["type"]
    if "items" in node:
        out["items"] = shape(node["items"], root)
    if "properties" in node:
        out["properties"] = {name: shape(child, root) for name, child in node["properties"].items()}
        out["required"] = frozenset(node.get("required", ()))
    return {**out, **_default(node)}


def _default(node: Mapping[str, Any]) -> Shape:
    if "default" not in node:
        return {}
    default = node["default"]
    return {"default": list(default) if isinstance(default, tuple) else default}


def spec_shape() -> Shape:
    return shape(msgspec.json.schema(TaskSpec))


def test_the_api_body_is_the_spec_and_its_payment() -> None:
    body = shape(TaskBody.model_json_schema())
    payment = {name: body["properties"].pop(name) for name in (*PAYMENT, "request_id")}
    spec = spec_shape()
    assert body["properties"] == spec["properties"]
    assert body["required"] == spec["required"] | {"reward"}
    assert payment["reward"] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": MAX_COINS}
    fee = {"type": "number", "minimum": 0.0, "maximum": MAX_COINS, "default": DEFAULT_FEE}
    assert payment["fee"] == fee


def test_the_bodies_mirror_the_task_spec() -> None:
    for body, spec in ((TaskBody, TaskSpec), (ModelBody, ModelSpec), (DatasetBody, DatasetSpec)):
        extra = {"reward", "fee", "request_id"} if body is TaskBody else set()
        assert set(body.model_fields) - extra == set(spec.__struct_fields__)
    full = TaskBody.model_validate(
        {"model": {"layers": [64, 32, 10]}, "dataset": {"name": "digits"}, "epochs": 3, "reward": 5}
    ).spec_mapping()
    assert msgspec.convert(full, TaskSpec).epochs == 3


def _crd_spec() -> Shape:
    """The MLTask CRD's spec, named as the task spec names its fields (through the mapping):
    snake_case, the hyperparameters group flattened; placement fields left out."""
    crd = shape(to_json_schema(openapi_schema("MLTask")["properties"]["spec"]))
    properties: dict[str, Shape] = {}
    for name, field in crd["properties"].items():
        if name == "networkSelector":
            continue
        if name == "hyperparameters":
            properties.update(field["properties"])
        else:
            properties[name] = field
    return _snake_shape({**crd, "properties": properties})


def _snake_shape(node: Shape) -> Shape:
    out = dict(node)
    if "properties" in node:
        out["properties"] = {
            snake_case(name): _snake_shape(child) for name, child in node["properties"].items()
        }
        out["required"] = frozenset(snake_case(name) for name in node["required"])
    if "items" in node:
        out["items"] = _snake_shape(node["items"])
    return out


def _without_defaults(node: Shape) -> Shape:
    out = {key: value for key, value in node.items() if key != "default"}
    if "properties" in node:
        out["properties"] = {k: _without_defaults(v) for k, v in node["properties"].items()}
    return out


def _defaults(node: Shape, path: str = "") -> dict[str, Any]:
    found = {path: node["default"]} if "default" in node and path else {}
    for name, child in node.get("properties", {}).items():
        found.update(_defaults(child, f"{path}.{name}" if path else name))
    return found


def test_the_mltask_crd_is_the_spec_and_its_payment() -> None:
    crd, spec = _crd_spec(), spec_shape()
    payment = {name: crd["properties"].pop(name) for name in PAYMENT}
    assert crd.pop("required") == spec.pop("required") | {"reward"}
    # The task spec's sha256 may be null; a manifest leaves it out instead.
    sha256 = spec["properties"]["dataset"]["properties"]["sha256"]
    sha256.pop("nullable"), sha256.pop("default")
    assert _without_defaults(crd) == _without_defaults(spec)
    crd_defaults, spec_defaults = _defaults(crd), _defaults(spec)
    for field, value in crd_defaults.items():
        assert value == MLTASK_DEFAULTS.get(field, spec_defaults.get(field)), field
    assert set(MLTASK_DEFAULTS) <= set(crd_defaults)
    body = shape(TaskBody.model_json_schema())["properties"]
    assert payment == {name: body[name] for name in PAYMENT}


def test_mltask_groups_the_hyperparameters_the_mapping_groups() -> None:
    crd = openapi_schema("MLTask")["properties"]["spec"]["properties"]
    grouped = set(crd["hyperparameters"]["properties"])
    assert grouped == {camel_case(name) for name in HYPERPARAMETERS}
    assert all(camel_case(name) not in crd for name in HYPERPARAMETERS)


def _literal(model: Any, field: str) -> set[str]:
    annotation = model.model_fields[field].annotation
    return {arg for arg in typing.get_args(annotation) if isinstance(arg, str)}


def test_mltask_spec_fields_are_the_node_apis_task_body() -> None:
    """`pouw task submit` and the operator send the spec as TaskBody: same fields, same enums."""
    spec = openapi_schema("MLTask")["properties"]["spec"]["properties"]
    top = set(spec) - {"hyperparameters", "networkSelector"}
    flattened = {snake_case(name) for name in top | set(spec["hyperparameters"]["properties"])}
    assert flattened == set(TaskBody.model_fields) - {"request_id"}
    assert {snake_case(n) for n in spec["model"]["properties"]} == set(ModelBody.model_fields)
    assert {snake_case(n) for n in spec["dataset"]["properties"]} == set(DatasetBody.model_fields)
    assert set(spec["optimizer"]["enum"]) == _literal(TaskBody, "optimizer")
    assert set(spec["aggregator"]["enum"]) == _literal(TaskBody, "aggregator")
    assert set(spec["model"]["properties"]["architecture"]["enum"]) == _literal(
        ModelBody, "architecture"
    )
    assert set(spec["model"]["properties"]["activation"]["enum"]) == _literal(
        ModelBody, "activation"
    )
    assert set(spec["dataset"]["properties"]["format"]["enum"]) == _literal(DatasetBody, "format")


# -- the mapping ----------------------------------------------------------------------------

MANIFEST_SPEC: dict[str, Any] = {
    "model": {"architecture": "cnn", "layers": [64, 10], "inputShape": [1, 8, 8]},
    "dataset": {"name": "digits", "testFraction": 0.25, "splitSeed": 3},
    "optimizer": "adam",
    "hyperparameters": {"learningRate": 0.05, "batchSize": 16, "epochs": 4, "tau": 0.001},
    "minAccuracy": 0.8,
    "miners": 2,
    "aggregator": "krum",
    "reward": 12,
    "fee": 0.5,
}


def test_a_manifest_becomes_a_task_spec_and_back() -> None:
    manifest = {"kind": "MLTask", "spec": {**MANIFEST_SPEC, "networkSelector": {"a": "b"}}}
    order = task_order(manifest)
    spec = msgspec.convert(order.spec, TaskSpec)
    assert (spec.model.input_shape, spec.dataset.split_seed, spec.learning_rate) == (
        (1, 8, 8),
        3,
        0.05,
    )
    assert (order.reward, order.fee) == (12.0, 0.5)
    assert mltask_spec(order) == MANIFEST_SPEC  # placement is the operator's, not the task's


def test_the_cli_yaml_may_use_the_specs_own_names() -> None:
    text = "model: {layers: [4, 3]}\ndataset: {name: iris, test_fraction: 0.3}\nreward: 1\n"
    order = task_order(yaml.safe_load(text))
    assert order == TaskOrder(
        {"model": {"layers": [4, 3]}, "dataset": {"name": "iris", "test_fraction": 0.3}}, 1.0
    )
    assert msgspec.convert(order.spec, TaskSpec).dataset.test_fraction == 0.3


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*task*.yaml")), ids=lambda p: p.name)
def test_every_example_task_is_a_valid_spec(path: Any) -> None:
    document = yaml.safe_load(path.read_text())
    order = task_order(document)
    TaskBody.model_validate({**order.spec, "reward": order.reward, "fee": order.fee})
    msgspec.convert(order.spec, TaskSpec)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([1, 2], "expected a mapping, got list"),
        ({"model": {"layers": [1, 2]}}, "needs a reward"),
        ({"reward": "lots"}, "must be numbers"),
        ({"reward": 1, "fee": True}, "must be numbers"),
    ],
)
def test_a_document_without_a_task_says_why(document: object, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        task_order(document)
