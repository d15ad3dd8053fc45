"""The CRDs in crds/ against the step 4 contract: valid apiextensions/v1 documents, structural
schemas, the contract's names, defaults and bounds, metav1 conditions, printer columns and scale
paths that exist, the examples, and the CEL rules evaluated for real (no API server here)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pouw.api.schemas import TaskBody
from pouw.blockchain.params import DEVNET_ACCOUNT_NAMES
from pouw.manifest import task_order
from pouw_operator.conditions import condition
from tests.operator.crd_schema import (
    API_VERSION,
    CRD_DIR,
    EXAMPLES_DIR,
    GROUP,
    KINDS,
    VERSION,
    cel_rules,
    compile_rule,
    defaulted,
    load_crd,
    openapi_schema,
    rule_violations,
    schema_errors,
    served_version,
    structural_problems,
    to_json_schema,
)

# The oldest Kubernetes these CRDs target (CEL fieldPath needs 1.28) and the newest it ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DELETE = object()

# --- objects ------------------------------------------------------------------------------


def _object(
    kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


MINIMAL = {
    "PoUWNode": _object("PoUWNode", "miners", {"role": "miner"}),
    "MLTask": _object(
        "MLTask",
        "digits",
        {"model": {"layers": [64, 10]}, "dataset": {"name": "digits"}, "reward": 50},
    ),
    "Stake": _object("Stake", "miners-0", {"node": "miners", "amount": 50}),
}

FULL = {
    "PoUWNode": _object(
        "PoUWNode",
        "miners",
        {
            "role": "miner",
            "replicas": 3,
            "stake": 250.5,
            "miningIntensity": 0.5,
            "omega": {"b": 1.0, "m": 0.5},
            "resources": {"cpu": "500m", "memory": "1Gi", "gpu": 1},
            "storage": {"size": "10Gi", "storageClassName": "fast"},
            "image": "pouw:gpu",
            "chainId": "pouw-devnet-2",
            "security": False,
            "nodeSelector": {"accelerator": "nvidia-h100"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "pouw", "effect": "NoSchedule"}
            ],
        },
        {
            "replicas": 3,
            "readyReplicas": 2,
            "height": 120,
            "peers": 6,
            "selector": "app.kubernetes.io/instance=miners,app.kubernetes.io/name=pouw-node",
            "observedGeneration": 2,
            "conditions": [condition("Ready", False, "PodsNotReady", "2 of 3 pods ready", 2)],
        },
    ),
    "MLTask": _object(
        "MLTask",
        "images",
        {
            "model": {
                "architecture": "cnn",
                "layers": [16, 32, 10],
                "activation": "gelu",
                "inputShape": [1, 8, 8],
            },
            "dataset": {
                "name": "images.npz",
                "format": "npz",
                "url": "https://example.org/images.npz",
                "sha256": "ab" * 32,
                "testFraction": 0.25,
                "splitSeed": 7,
                "rows": 1797,
                "features": 64,
                "classes": 10,
            },
            "optimizer": "adam",
            "hyperparameters": {"learningRate": 0.01, "batchSize": 64, "epochs": 20, "tau": 0.001},
            "minAccuracy": 0.8,
            "miners": 3,
            "aggregator": "krum",
            "reward": 120.5,
            "fee": 0,
            "networkSelector": {"matchLabels": {"pouw.network/role": "peer"}},
        },
        {
            "phase": "Training",
            "taskId": "cd" * 32,
            "submittedTo": "client-0",
            "epoch": 3,
            "loss": 0.42,
            "accuracy": None,
            "testAccuracy": None,
            "blocks": 4,
            "modelUrl": "http://client-0.client.default.svc:8080/tasks/cd/model",
            "message": "",
            "observedGeneration": 1,
            "conditions": [condition("Submitted", True, "Accepted", "task on chain", 1)],
        },
    ),
    "Stake": _object(
        "Stake",
        "miners-2",
        {"node": "miners", "replica": 2, "amount": 50.5, "role": "miner"},
        {
            "phase": "Active",
            "ticketId": "ef" * 32,
            "lockedAmount": 50.5,
            "message": "ticket confirmed",
            "observedGeneration": 1,
            "conditions": [condition("Ready", True, "TicketConfirmed", "", 1)],
        },
    ),
}


def changed(obj: Mapping[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of `obj` with the dotted `path` set to `value` (or removed for DELETE)."""
    result = copy.deepcopy(dict(obj))
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    target: Any = result
    for part in parents:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return result


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{document['metadata']['name']}", document)
        for path in sorted(EXAMPLES_DIR.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text("utf-8"))
        if document
    ]


def _example(file: str) -> list[dict[str, Any]]:
    return [document for name, document in example_documents() if name.startswith(f"{file}:")]


# --- the CRD documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted([*CRD_DIR.glob("*.yaml"), *EXAMPLES_DIR.glob("*.yaml")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_yaml_file_loads(path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text("utf-8")) if document]
    assert documents
    assert all(isinstance(document, dict) for document in documents)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_apiextensions_v1_document(kind: str, version: str) -> None:
    crd = load_crd(kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    kubernetes_validate.validate(crd, version, strict=True)


def _schema_node(crd: dict[str, Any], path: str) -> dict[str, Any]:
    node: dict[str, Any] = served_version(crd)["schema"]["openAPIV3Schema"]
    for name in path.split("."):
        node = node["properties"][name]
    return node


@pytest.mark.parametrize(
    ("mutate", "offending"),
    [
        pytest.param(
            lambda crd: _schema_node(crd, "spec.reward").update(exclusiveMinimum=0),
            "exclusiveMinimum",
            id="numeric-exclusiveMinimum",
        ),
        pytest.param(
            lambda crd: _schema_node(crd, "spec").update({"x-kubernetes-validation": []}),
            "spec",
            id="misspelt-validations-key",
        ),
        pytest.param(
            lambda crd: _schema_node(crd, "spec.miners").update(minimum="1"),
            "minimum",
            id="string-minimum",
        ),
        pytest.param(
            lambda crd: served_version(crd).update(served="yes"), "served", id="string-served"
        ),
    ],
)
def test_kubernetes_validate_rejects_a_broken_crd(mutate: Any, offending: str) -> None:
    crd = load_crd("MLTask")
    mutate(crd)
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(crd, KUBERNETES_VERSIONS[-1], strict=True)
    assert list(caught.value.absolute_path)[-1] == offending


@pytest.mark.parametrize(
    ("kind", "plural", "singular", "short"),
    [
        ("PoUWNode", "pouwnodes", "pouwnode", "pn"),
        ("MLTask", "mltasks", "mltask", "mlt"),
        ("Stake", "stakes", "stake", "stk"),
    ],
)
def test_names_group_scope_and_version(kind: str, plural: str, singular: str, short: str) -> None:
    crd = load_crd(kind)
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["pouw"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        (VERSION, True, True)
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_status_subresource_everywhere_scale_on_pouwnode_only(kind: str) -> None:
    subresources = served_version(load_crd(kind))["subresources"]
    assert subresources["status"] == {}
    if kind == "PoUWNode":
        assert subresources["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    else:
        assert "scale" not in subresources


# --- structural schemas -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert structural_problems(openapi_schema(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_spec_and_its_fields_are_described_for_kubectl_explain(kind: str) -> None:
    schema = openapi_schema(kind)
    spec = schema["properties"]["spec"]
    assert schema.get("description")
    assert spec.get("description")
    assert [
        name for name, child in spec["properties"].items() if not child.get("description")
    ] == []


_OBJECT: dict[str, Any] = {"type": "object", "properties": {"metadata": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        pytest.param({"replicas": {"minimum": 0}}, "replicas: no type", id="untyped"),
        pytest.param({"replicas": {"type": "int"}}, "unknown type", id="unknown-type"),
        pytest.param(
            {
                "labels": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "additionalProperties": {"type": "string"},
                }
            },
            "properties and additionalProperties together",
            id="properties-and-additionalProperties",
        ),
        pytest.param(
            {"labels": {"type": "object", "additionalProperties": False}},
            "additionalProperties may not be false",
            id="additionalProperties-false",
        ),
        pytest.param({"layers": {"type": "array"}}, "needs one items schema", id="array-no-items"),
        pytest.param(
            {"layers": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}},
            "uniqueItems",
            id="uniqueItems",
        ),
        pytest.param(
            {"spec": {"type": "object", "required": ["role"], "properties": {}}},
            "required ['role']",
            id="required-unknown-property",
        ),
        pytest.param(
            {"role": {"type": "string", "enum": ["miner", 1]}}, "enum value 1", id="enum-type"
        ),
        pytest.param(
            {"replicas": {"type": "integer", "minimum": 0, "default": -1}},
            "replicas: default",
            id="default-breaks-schema",
        ),
        pytest.param(
            {
                "res": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "default": {"b": 1},
                }
            },
            "res: default",
            id="default-with-unknown-field",
        ),
        pytest.param({"ref": {"$ref": "#/definitions/x"}}, "$ref is not allowed", id="ref"),
        pytest.param(
            {"x": {"type": "string", "anyOf": [{"type": "string", "pattern": "a"}]}},
            "type inside anyOf",
            id="type-in-junctor",
        ),
        pytest.param(
            {
                "conditions": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": {"type": "object", "properties": {"type": {"type": "string"}}},
                }
            },
            "map key 'type'",
            id="map-key-not-required",
        ),
        pytest.param(
            {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}},
            "only name and generateName",
            id="metadata-restricted",
        ),
    ],
)
def test_the_structural_walker_finds_what_kubernetes_refuses(
    fragment: dict[str, Any], problem: str
) -> None:
    schema = copy.deepcopy(_OBJECT)
    schema["properties"].update(fragment)
    problems = structural_problems(schema)
    assert any(problem in line for line in problems), problems


def test_the_openapi_bits_become_json_schema() -> None:
    node = {
        "type": "object",
        "properties": {
            "a": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
            "b": {"type": "string", "enum": ["x"], "nullable": True},
            "c": {"x-kubernetes-int-or-string": True},
            "d": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"e": {"type": "string"}},
            },
        },
    }
    assert to_json_schema(node, strict=True) == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "b": {"type": ["string", "null"], "enum": ["x", None]},
            "c": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "d": {"type": "object", "properties": {"e": {"type": "string"}}},
        },
    }
    assert "additionalProperties" not in to_json_schema(node)


# --- defaults, bounds and the node API ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected_spec"),
    [
        pytest.param(
            "PoUWNode",
            {
                "role": "miner",
                "replicas": 1,
                "stake": 100,
                "miningIntensity": 1,
                "resources": {"cpu": "1", "memory": "2Gi", "gpu": 0},
                "storage": {"size": "1Gi"},
                "security": True,  # no chainId: the operator makes the namespace's chain
            },
            id="PoUWNode",
        ),
        pytest.param(
            "MLTask",
            {
                "model": {"layers": [64, 10], "architecture": "mlp", "activation": "relu"},
                "dataset": {"name": "digits", "format": "builtin", "testFraction": 0.2},
                "optimizer": "sgd",
                "hyperparameters": {"learningRate": 0.1, "batchSize": 32, "epochs": 10},
                "minAccuracy": 0,
                "miners": 1,
                "aggregator": "robust",
                "reward": 50,
                "fee": 0.01,
            },
            id="MLTask",
        ),
        pytest.param("Stake", {"node": "miners", "amount": 50, "replica": 0}, id="Stake"),
    ],
)
def test_defaults_are_the_contracts(kind: str, expected_spec: dict[str, Any]) -> None:
    assert defaulted(kind, MINIMAL[kind])["spec"] == expected_spec


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(MINIMAL["MLTask"], id="minimal"),
        pytest.param(FULL["MLTask"], id="full"),
        *(
            pytest.param(doc, id=name)
            for name, doc in example_documents()
            if doc["kind"] == "MLTask"
        ),
    ],
)
def test_a_valid_defaulted_mltask_is_a_valid_node_task_body(document: dict[str, Any]) -> None:
    assert schema_errors("MLTask", document, strict=True) == {}
    order = task_order(defaulted("MLTask", document))
    body = TaskBody.model_validate({**order.spec, "reward": order.reward, "fee": order.fee})
    assert body.reward == document["spec"]["reward"]


# --- good and bad objects -----------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "pruning"])
@pytest.mark.parametrize(
    "document",
    [
        *(pytest.param(MINIMAL[kind], id=f"{kind}-minimal") for kind in KINDS),
        *(pytest.param(FULL[kind], id=f"{kind}-full") for kind in KINDS),
        *(pytest.param(defaulted(kind, MINIMAL[kind]), id=f"{kind}-defaulted") for kind in KINDS),
    ],
)
def test_good_objects_validate(document: dict[str, Any], strict: bool) -> None:
    assert schema_errors(document["kind"], document, strict=strict) == {}
    assert rule_violations(document["kind"], document) == []


# (id, dotted path changed in the FULL object, new value or DELETE, what the error says);
# the error must name that path (its parent, for a missing required field) and nothing else.
BAD: dict[str, list[tuple[str, str, object, str]]] = {
    "PoUWNode": [
        ("wrong-role", "spec.role", "boss", "is not one of"),
        ("missing-role", "spec.role", DELETE, "required"),
        ("missing-spec", "spec", DELETE, "required"),
        ("negative-replicas", "spec.replicas", -1, "minimum"),
        ("fractional-replicas", "spec.replicas", 1.5, "integer"),
        ("string-replicas", "spec.replicas", "3", "integer"),
        ("negative-stake", "spec.stake", -5, "minimum"),
        ("intensity-above-1", "spec.miningIntensity", 1.5, "maximum"),
        ("negative-omega", "spec.omega.b", -1, "minimum"),
        ("negative-gpu", "spec.resources.gpu", -1, "minimum"),
        ("bad-quantity", "spec.resources.memory", "2GB", "match"),
        ("numeric-cpu", "spec.resources.cpu", 2, "string"),
        ("empty-size", "spec.storage.size", "", "match"),
        ("string-security", "spec.security", "yes", "boolean"),
        ("empty-chain-id", "spec.chainId", "", "non-empty"),
        ("selector-value", "spec.nodeSelector.gpu", True, "string"),
        ("tolerations-object", "spec.tolerations", {"key": "a"}, "array"),
        ("negative-ready", "status.readyReplicas", -1, "minimum"),
        ("condition-status", "status.conditions.0.status", "Yes", "is not one of"),
        ("condition-no-reason", "status.conditions.0.reason", DELETE, "required"),
        ("condition-reason-words", "status.conditions.0.reason", "not ok", "match"),
        ("condition-time", "status.conditions.0.lastTransitionTime", "yesterday", "date-time"),
    ],
    "MLTask": [
        ("zero-epochs", "spec.hyperparameters.epochs", 0, "minimum"),
        ("zero-batch", "spec.hyperparameters.batchSize", 0, "minimum"),
        ("zero-learning-rate", "spec.hyperparameters.learningRate", 0, "less than or equal"),
        ("negative-tau", "spec.hyperparameters.tau", -0.1, "minimum"),
        ("missing-dataset", "spec.dataset", DELETE, "required"),
        ("missing-dataset-name", "spec.dataset.name", DELETE, "required"),
        ("empty-dataset-name", "spec.dataset.name", "", "non-empty"),
        ("dataset-format", "spec.dataset.format", "parquet", "is not one of"),
        ("upper-case-sha256", "spec.dataset.sha256", "AB" * 32, "match"),
        ("test-fraction-1", "spec.dataset.testFraction", 1, "greater than or equal"),
        ("test-fraction-0", "spec.dataset.testFraction", 0, "less than or equal"),
        ("negative-split-seed", "spec.dataset.splitSeed", -1, "minimum"),
        ("missing-model", "spec.model", DELETE, "required"),
        ("missing-layers", "spec.model.layers", DELETE, "required"),
        ("one-layer", "spec.model.layers", [64], "short"),
        ("zero-layer", "spec.model.layers.1", 0, "minimum"),
        ("string-layer", "spec.model.layers.1", "10", "integer"),
        ("architecture", "spec.model.architecture", "transformer", "is not one of"),
        ("activation", "spec.model.activation", "softmax", "is not one of"),
        ("optimizer", "spec.optimizer", "rmsprop", "is not one of"),
        ("aggregator", "spec.aggregator", "max", "is not one of"),
        ("accuracy-above-1", "spec.minAccuracy", 1.5, "maximum"),
        ("zero-miners", "spec.miners", 0, "minimum"),
        ("negative-fee", "spec.fee", -0.01, "minimum"),
        ("zero-reward", "spec.reward", 0, "less than or equal"),
        ("missing-reward", "spec.reward", DELETE, "required"),
        ("string-reward", "spec.reward", "50", "number"),
        ("selector-label", "spec.networkSelector.matchLabels.tier", 1, "string"),
        ("status-phase", "status.phase", "Running", "is not one of"),
        ("status-accuracy", "status.accuracy", "high", "number"),
        ("status-epoch", "status.epoch", -1, "minimum"),
    ],
    "Stake": [
        ("zero-amount", "spec.amount", 0, "less than or equal"),
        ("negative-amount", "spec.amount", -5, "less than or equal"),
        ("missing-amount", "spec.amount", DELETE, "required"),
        ("missing-node", "spec.node", DELETE, "required"),
        ("empty-node", "spec.node", "", "non-empty"),
        ("negative-replica", "spec.replica", -1, "minimum"),
        ("role", "spec.role", "boss", "is not one of"),
        ("status-phase", "status.phase", "Locked", "is not one of"),
        ("status-locked-amount", "status.lockedAmount", "50", "number"),
    ],
}


@pytest.mark.parametrize(
    ("kind", "path", "value", "says"),
    [
        pytest.param(kind, path, value, says, id=f"{kind}-{name}")
        for kind, cases in BAD.items()
        for name, path, value, says in cases
    ],
)
def test_a_bad_object_is_rejected_naming_the_path(
    kind: str, path: str, value: object, says: str
) -> None:
    document = changed(FULL[kind], path, value)
    parent, _, field = path.rpartition(".")
    offending = parent if value is DELETE else path
    for strict in (True, False):
        errors = schema_errors(kind, document, strict=strict)
        assert set(errors) == {offending}, errors
        assert says in errors[offending]
        if value is DELETE:
            assert f"'{field}'" in errors[offending]


@pytest.mark.parametrize(
    ("kind", "path", "offending"),
    [
        pytest.param("PoUWNode", "spec.replica", "spec", id="PoUWNode-spec-typo"),
        pytest.param(
            "PoUWNode", "spec.resources.gpus", "spec.resources", id="PoUWNode-resources-typo"
        ),
        pytest.param(
            "MLTask",
            "spec.hyperparameters.learning_rate",
            "spec.hyperparameters",
            id="MLTask-snake-case",
        ),
        pytest.param("MLTask", "spec.model.dropout", "spec.model", id="MLTask-model-extra"),
        pytest.param("Stake", "spec.amounts", "spec", id="Stake-spec-typo"),
        pytest.param("Stake", "status.ticket", "status", id="Stake-status-typo"),
    ],
)
def test_an_unknown_field_is_refused_by_kubectl_and_pruned_by_the_server(
    kind: str, path: str, offending: str
) -> None:
    document = changed(FULL[kind], path, 1)
    errors = schema_errors(kind, document, strict=True)
    assert set(errors) == {offending}
    assert "unexpected" in errors[offending]
    assert schema_errors(kind, document, strict=False) == {}


def test_tolerations_keep_any_field() -> None:
    toleration = {"key": "k", "operator": "Exists", "tolerationSeconds": 30, "future": {"x": 1}}
    document = changed(FULL["PoUWNode"], "spec.tolerations", [toleration])
    assert schema_errors("PoUWNode", document, strict=True) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_have_the_metav1_condition_shape(kind: str) -> None:
    status = openapi_schema(kind)["properties"]["status"]
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    fields = item["properties"]
    assert {name: fields[name]["type"] for name in fields} == {
        "type": "string",
        "status": "string",
        "reason": "string",
        "message": "string",
        "lastTransitionTime": "string",
        "observedGeneration": "integer",
    }
    assert fields["status"]["enum"] == ["True", "False", "Unknown"]
    assert fields["lastTransitionTime"]["format"] == "date-time"


# --- printer columns and scale ------------------------------------------------------------

_OBJECT_META = {"name", "namespace", "creationTimestamp", "labels", "annotations", "generation"}
_COLUMN_TYPES = {
    "integer": {"integer"},
    "number": {"number", "integer"},
    "string": {"string"},
    "boolean": {"boolean"},
    "date": {"string"},
}


def _field_type(kind: str, json_path: str) -> str:
    """The schema type at a simple `.a.b.c` JSONPath; KeyError where it does not exist."""
    parts = json_path.removeprefix(".").split(".")
    if parts[0] == "metadata":
        if len(parts) != 2 or parts[1] not in _OBJECT_META:
            raise KeyError(json_path)
        return "string"
    node = openapi_schema(kind)
    for part in parts:
        node = node["properties"][part]
    field_type: str = node["type"]
    return field_type


CONTRACT_COLUMNS = {
    "PoUWNode": [
        ("Role", ".spec.role"),
        ("Replicas", ".spec.replicas"),
        ("Ready", ".status.readyReplicas"),
        ("Height", ".status.height"),
        ("Age", ".metadata.creationTimestamp"),
    ],
    "MLTask": [
        ("Phase", ".status.phase"),
        ("Epoch", ".status.epoch"),
        ("Accuracy", ".status.accuracy"),
        ("Age", ".metadata.creationTimestamp"),
    ],
    "Stake": [
        ("Node", ".spec.node"),
        ("Amount", ".spec.amount"),
        ("Ticket", ".status.ticketId"),
        ("Age", ".metadata.creationTimestamp"),
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_are_the_contracts_and_point_at_typed_fields(kind: str) -> None:
    columns = served_version(load_crd(kind))["additionalPrinterColumns"]
    shown = [(c["name"], c["jsonPath"]) for c in columns if c.get("priority", 0) == 0]
    assert shown == CONTRACT_COLUMNS[kind]
    for column in columns:
        assert _field_type(kind, column["jsonPath"]) in _COLUMN_TYPES[column["type"]], column


def test_scale_subresource_paths_exist_with_the_right_types() -> None:
    scale = served_version(load_crd("PoUWNode"))["subresources"]["scale"]
    assert _field_type("PoUWNode", scale["specReplicasPath"]) == "integer"
    assert _field_type("PoUWNode", scale["statusReplicasPath"]) == "integer"
    assert _field_type("PoUWNode", scale["labelSelectorPath"]) == "string"


def test_a_column_on_a_missing_field_is_caught() -> None:
    with pytest.raises(KeyError):
        _field_type("PoUWNode", ".status.readyReplica")


# --- the examples -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "document"), example_documents(), ids=[n for n, _ in example_documents()]
)
def test_an_example_validates_against_its_crd(name: str, document: dict[str, Any]) -> None:
    assert document["apiVersion"] == API_VERSION
    assert document["kind"] in KINDS
    assert schema_errors(document["kind"], document, strict=True) == {}
    assert rule_violations(document["kind"], document) == []


def test_the_example_files_hold_the_network_a_task_and_a_stake() -> None:
    assert [d["kind"] for d in _example("mytask.yaml")] == ["MLTask"]
    assert [d["kind"] for d in _example("stake.yaml")] == ["Stake"]
    assert {d["kind"] for d in _example("network.yaml")} == {"PoUWNode"}


def test_the_network_example_pods_are_funded_by_the_devnet_genesis() -> None:
    nodes = {
        d["metadata"]["name"]: defaulted("PoUWNode", d)["spec"] for d in _example("network.yaml")
    }
    assert {name: spec["role"] for name, spec in nodes.items()} == {
        "supervisor": "supervisor",
        "miners": "miner",
        "verifier": "verifier",
        "evaluator": "evaluator",
        "client": "peer",
    }
    assert nodes["miners"]["replicas"] == 3
    for name, spec in nodes.items():
        assert spec["chainId"].startswith("pouw-devnet")
        pods = [f"{name}-{i}" for i in range(spec["replicas"])]
        assert set(pods) <= set(DEVNET_ACCOUNT_NAMES), pods


def test_the_stake_example_stakes_a_pod_of_the_network_example() -> None:
    (stake,) = _example("stake.yaml")
    nodes = {
        d["metadata"]["name"]: defaulted("PoUWNode", d)["spec"] for d in _example("network.yaml")
    }
    spec = defaulted("Stake", stake)["spec"]
    assert (spec["node"], spec["replica"], spec["amount"]) == ("miners", 0, 50)
    assert spec["replica"] < nodes[spec["node"]]["replicas"]


def test_the_task_example_trains_digits_to_ninety_percent() -> None:
    (task,) = _example("mytask.yaml")
    spec = defaulted("MLTask", task)["spec"]
    assert spec["dataset"] == {"name": "digits", "format": "builtin", "testFraction": 0.2}
    assert spec["model"]["layers"] == [64, 128, 64, 10]
    assert spec["hyperparameters"]["epochs"] >= 20
    assert (spec["minAccuracy"], spec["reward"]) == (0.9, 50)


# --- CEL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_rule_compiles(kind: str) -> None:
    rules = cel_rules(kind)
    assert rules
    for rule in rules:
        compile_rule(rule.rule)


@pytest.mark.parametrize("kind", KINDS)
def test_transition_rules_sit_on_fields_every_object_has(kind: str) -> None:
    """Kubernetes runs a transition rule only where old and new both hold the field; on a
    required chain from the root that is every update, so no change slips past."""
    transitions = [rule for rule in cel_rules(kind) if rule.transition]
    assert transitions
    for rule in transitions:
        node: Mapping[str, Any] = openapi_schema(kind)
        for name in rule.path:
            assert name in node.get("required", ()), f"{rule.where}: {name} is optional"
            node = node["properties"][name]


@pytest.mark.parametrize("kind", KINDS)
def test_a_rules_field_path_names_a_field_of_its_node(kind: str) -> None:
    """The API server refuses a CRD whose fieldPath does not resolve in the schema."""
    for rule in cel_rules(kind):
        if rule.field_path is None:
            continue
        node = rule.node
        for name in rule.field_path.removeprefix(".").split("."):
            assert name in node.get("properties", {}), f"{rule.where}: {rule.field_path}"
            node = node["properties"][name]


ROLE_CHANGED = "role cannot be changed"
MODEL_CHANGED = "model cannot be changed"
DATASET_CHANGED = "dataset cannot be changed"
STAKE_CHANGED = "a stake cannot change; delete it and create another"


@pytest.mark.parametrize(
    ("kind", "path", "value", "violations"),
    [
        pytest.param(
            "PoUWNode", "spec.role", "verifier", [ROLE_CHANGED], id="PoUWNode-role-changed"
        ),
        pytest.param("PoUWNode", "spec.role", "miner", [], id="PoUWNode-same-role"),
        pytest.param("PoUWNode", "spec.replicas", 5, [], id="PoUWNode-scaled"),
        pytest.param("PoUWNode", "spec.image", "pouw:v2", [], id="PoUWNode-new-image"),
        pytest.param("PoUWNode", "status.height", 500, [], id="PoUWNode-status"),
        pytest.param(
            "MLTask", "spec.model.layers", [16, 64, 10], [MODEL_CHANGED], id="MLTask-layers"
        ),
        pytest.param(
            "MLTask", "spec.model.activation", "relu", [MODEL_CHANGED], id="MLTask-activation"
        ),
        pytest.param(
            "MLTask",
            "spec.model.inputShape",
            DELETE,
            [MODEL_CHANGED, "a cnn needs inputShape [channels, height, width]"],
            id="MLTask-input-shape-dropped",
        ),
        pytest.param(
            "MLTask", "spec.dataset.sha256", "00" * 32, [DATASET_CHANGED], id="MLTask-dataset-hash"
        ),
        pytest.param(
            "MLTask", "spec.dataset.testFraction", 0.3, [DATASET_CHANGED], id="MLTask-test-fraction"
        ),
        pytest.param(
            "MLTask",
            "spec",
            {**FULL["MLTask"]["spec"], "model": {"layers": [4, 3]}, "dataset": {"name": "iris"}},
            [MODEL_CHANGED, DATASET_CHANGED],
            id="MLTask-model-and-dataset",
        ),
        pytest.param("MLTask", "spec.reward", 500, [], id="MLTask-reward"),
        pytest.param("MLTask", "spec.hyperparameters.epochs", 40, [], id="MLTask-epochs"),
        pytest.param("MLTask", "spec.minAccuracy", 0.95, [], id="MLTask-min-accuracy"),
        pytest.param("MLTask", "spec.networkSelector", DELETE, [], id="MLTask-selector"),
        pytest.param("Stake", "spec.amount", 60, [STAKE_CHANGED], id="Stake-amount"),
        pytest.param("Stake", "spec.role", DELETE, [STAKE_CHANGED], id="Stake-role-dropped"),
        pytest.param("Stake", "spec.node", "verifier", [STAKE_CHANGED], id="Stake-node"),
        pytest.param("Stake", "spec.amount", 50.5, [], id="Stake-same"),
        pytest.param("Stake", "status.phase", "Failed", [], id="Stake-status"),
    ],
)
def test_an_update_is_checked_by_the_crds_cel_rules(
    kind: str, path: str, value: object, violations: list[str]
) -> None:
    old = FULL[kind]
    new = changed(old, path, value)
    assert sorted(rule_violations(kind, new, old)) == sorted(violations)


def test_numbers_compare_as_doubles_as_in_kubernetes() -> None:
    """An amount written as 50 and read back as 50.0 is the same stake."""
    old = changed(MINIMAL["Stake"], "spec.amount", 50)
    assert rule_violations("Stake", changed(old, "spec.amount", 50.0), old) == []


def test_defaults_spelled_out_are_no_change() -> None:
    """Re-applying a manifest that omits defaulted fields leaves model and dataset as stored."""
    stored = defaulted("MLTask", MINIMAL["MLTask"])
    assert rule_violations("MLTask", MINIMAL["MLTask"], stored) == []


@pytest.mark.parametrize(
    ("path", "value", "violations"),
    [
        pytest.param(
            "spec.model",
            {"architecture": "cnn", "layers": [8, 10]},
            ["a cnn needs inputShape [channels, height, width]"],
            id="cnn-without-input-shape",
        ),
        pytest.param(
            "spec.model",
            {"architecture": "cnn", "layers": [8, 10], "inputShape": [8, 8]},
            ["a cnn needs inputShape [channels, height, width]"],
            id="cnn-with-2d-input-shape",
        ),
        pytest.param(
            "spec.model",
            {"architecture": "cnn", "layers": [8, 10], "inputShape": [1, 8, 8]},
            [],
            id="cnn-with-input-shape",
        ),
        pytest.param(
            "spec.dataset",
            {"name": "data.csv", "format": "csv"},
            ["a dataset file (npz or csv) needs its sha256"],
            id="file-without-sha256",
        ),
        pytest.param("spec.dataset", {"name": "wine"}, [], id="builtin-without-sha256"),
    ],
)
def test_a_create_is_checked_by_the_non_transition_rules(
    path: str, value: object, violations: list[str]
) -> None:
    assert rule_violations("MLTask", changed(MINIMAL["MLTask"], path, value)) == violations


@pytest.mark.parametrize("kind", KINDS)
def test_transition_rules_do_not_run_on_create(kind: str) -> None:
    assert rule_violations(kind, FULL[kind]) == []
