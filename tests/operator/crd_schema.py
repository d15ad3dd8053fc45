"""The CRDs in crds/ as data for tests: loading, their OpenAPI v3 schemas as JSON Schema,
defaulting as the API server does, and their CEL rules evaluated with cel-python.

`load_crd(kind)` and `validator(kind)` are the entry points other tests reuse.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
EXAMPLES_DIR = REPO / "examples"
GROUP = "pouw.network"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_FILES = {"PoUWNode": "pouwnodes.yaml", "MLTask": "mltasks.yaml", "Stake": "stakes.yaml"}
KINDS = tuple(CRD_FILES)

# OpenAPI v3 keys the API server reads and JSON Schema does not know.
_KUBERNETES_KEYS = re.compile(r"^x-kubernetes-")
_OLD_SELF = re.compile(r"\boldSelf\b")


@cache
def _parsed_crd(kind: str) -> dict[str, Any]:
    documents = [
        document
        for document in yaml.safe_load_all((CRD_DIR / CRD_FILES[kind]).read_text("utf-8"))
        if document
    ]
    assert len(documents) == 1, f"{CRD_FILES[kind]}: expected one document"
    crd: dict[str, Any] = documents[0]
    return crd


def load_crd(kind: str) -> dict[str, Any]:
    """The CRD of `kind` as parsed from crds/ (a fresh copy: mutate it freely)."""
    return copy.deepcopy(_parsed_crd(kind))


def served_version(crd: Mapping[str, Any], name: str = VERSION) -> dict[str, Any]:
    for version in crd["spec"]["versions"]:
        if version["name"] == name:
            found: dict[str, Any] = version
            return found
    raise KeyError(f"{crd['metadata']['name']} has no version {name}")


def openapi_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of `kind`'s served version."""
    schema: dict[str, Any] = served_version(load_crd(kind))["schema"]["openAPIV3Schema"]
    return schema


# --- structural schemas --------------------------------------------------------------------

TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
# Keys an apiextensions.k8s.io/v1 schema may not use at all.
FORBIDDEN_KEYS = frozenset(
    {
        "$ref",
        "$schema",
        "id",
        "definitions",
        "dependencies",
        "patternProperties",
        "additionalItems",
        "readOnly",
        "writeOnly",
        "discriminator",
        "xml",
        "deprecated",
    }
)
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# What a junctor's branches may not set (only value validations belong there).
_NOT_IN_JUNCTORS = frozenset({"type", "default", "description", "additionalProperties", "nullable"})
_ENUM_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def structural_problems(node: Mapping[str, Any], path: str = "") -> list[str]:
    """Why `node` is not a structural schema (Kubernetes' rules for CRD schemas), or []."""
    where = path or "<root>"
    problems = [f"{where}: {key} is not allowed" for key in sorted(FORBIDDEN_KEYS & node.keys())]
    kind = node.get("type")
    open_ended = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if kind is None and not open_ended:
        problems.append(f"{where}: no type")
    elif kind is not None and kind not in TYPES:
        problems.append(f"{where}: unknown type {kind!r}")
    if node.get("uniqueItems"):
        problems.append(f"{where}: uniqueItems may not be true")
    properties: Mapping[str, Any] = node.get("properties", {})
    extra = node.get("additionalProperties")
    if properties and extra is not None:
        problems.append(f"{where}: properties and additionalProperties together")
    if extra is False:
        problems.append(f"{where}: additionalProperties may not be false")
    if (properties or isinstance(extra, dict)) and kind != "object":
        problems.append(f"{where}: properties on a non-object")
    missing = set(node.get("required", ())) - properties.keys()
    if missing:
        problems.append(f"{where}: required {sorted(missing)} not among the properties")
    if kind == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{where}: an array needs one items schema")
    if "items" in node and kind != "array":
        problems.append(f"{where}: items on a non-array")
    problems += _enum_problems(node, where)
    problems += _list_map_problems(node, where)
    problems += _junctor_problems(node, where)
    for rule in node.get("x-kubernetes-validations", ()):
        if not isinstance(rule.get("rule"), str) or not rule.get("message"):
            problems.append(f"{where}: a validation rule needs rule and message")
    if "default" in node:
        problems += [f"{where}: default {problem}" for problem in _default_problems(node)]
    if not path:
        problems += _metadata_problems(properties.get("metadata", {}))
    for name, child in properties.items():
        problems += structural_problems(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(extra, dict):
        problems += structural_problems(extra, f"{path}{{}}")
    return problems


def _enum_problems(node: Mapping[str, Any], where: str) -> list[str]:
    allowed = _ENUM_TYPES.get(node.get("type", ""))
    if allowed is None:
        return []
    problems: list[str] = []
    for value in node.get("enum", ()):
        if value is None and node.get("nullable"):
            continue
        if not isinstance(value, allowed) or (
            isinstance(value, bool) != (node["type"] == "boolean")
        ):
            problems.append(f"{where}: enum value {value!r} is not a {node['type']}")
    return problems


def _list_map_problems(node: Mapping[str, Any], where: str) -> list[str]:
    if node.get("x-kubernetes-list-type") != "map":
        return []
    keys = node.get("x-kubernetes-list-map-keys") or []
    items = node.get("items", {})
    if not keys or items.get("type") != "object":
        return [f"{where}: a map list needs list-map-keys and object items"]
    item_properties = items.get("properties", {})
    return [
        f"{where}: map key {key!r} must be a required or defaulted scalar of the items"
        for key in keys
        if key not in item_properties
        or item_properties[key].get("type") not in {"string", "integer", "boolean", "number"}
        or (key not in items.get("required", ()) and "default" not in item_properties[key])
    ]


def _junctor_problems(node: Mapping[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for junctor in JUNCTORS:
        if junctor not in node:
            continue
        branches = [node[junctor]] if junctor == "not" else node[junctor]
        for branch in branches:
            problems += [
                f"{where}: {key} inside {junctor}"
                for key in sorted(_NOT_IN_JUNCTORS & branch.keys())
            ]
            unspecified = set(branch.get("properties", {})) - set(node.get("properties", {}))
            problems += [
                f"{where}: {junctor} constrains unspecified {name}" for name in unspecified
            ]
    return problems


def _default_problems(node: Mapping[str, Any]) -> list[str]:
    schema = to_json_schema(node, strict=True)
    schema.pop("default", None)
    checker = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    default = apply_defaults(copy.deepcopy(node["default"]), node)
    return [error.message for error in checker.iter_errors(default)]


def _metadata_problems(metadata: Mapping[str, Any]) -> list[str]:
    problems = [] if metadata.get("type") == "object" else ["metadata: must be type object"]
    others = set(metadata.get("properties", {})) - {"name", "generateName"}
    problems += [
        f"metadata.{name}: only name and generateName may be restricted" for name in others
    ]
    problems += [
        f"metadata: {key} may not be set"
        for key in sorted(metadata.keys() - {"type", "properties", "description"})
    ]
    return problems


# --- OpenAPI v3 (Kubernetes dialect) -> JSON Schema 2020-12 ------------------------------


def to_json_schema(node: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """A JSON Schema 2020-12 equivalent of a Kubernetes structural schema.

    `nullable` widens the type with null, the boolean exclusiveMinimum/Maximum of OpenAPI v3.0
    become the numeric ones, int-or-string becomes anyOf, and the other x-kubernetes-* keys are
    dropped. With `strict`, objects with properties refuse unknown fields unless they preserve
    them: what `kubectl apply` (server-side field validation Strict) reports; without it the API
    server prunes such fields silently.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if _KUBERNETES_KEYS.match(key) or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child, strict=strict) for name, child in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value, strict=strict)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(child, strict=strict) for child in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if value:
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[key] = node[bound]
        else:
            out[key] = copy.deepcopy(value)
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if key in out:
            out.pop(bound, None)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}, *out.get("anyOf", [])]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        strict
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339, as the API server reads metav1.Time (jsonschema checks date-time only with an
    optional package installed)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


@cache
def validator(kind: str, *, strict: bool = False) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator of whole `kind` objects: apiVersion, kind, metadata, spec, status."""
    schema = to_json_schema(openapi_schema(kind), strict=strict)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


def dotted(path: Iterable[object]) -> str:
    """`spec.model.layers.1` for a jsonschema error's absolute_path."""
    return ".".join(str(part) for part in path)


def schema_errors(kind: str, obj: Mapping[str, Any], *, strict: bool = False) -> dict[str, str]:
    """Dotted path -> message of every schema violation of `obj`."""
    return {
        dotted(error.absolute_path): error.message
        for error in validator(kind, strict=strict).iter_errors(obj)
    }


# --- defaulting ---------------------------------------------------------------------------


def apply_defaults(value: Any, node: Mapping[str, Any]) -> Any:
    """`value` with the schema's defaults filled in, as the API server stores it: a missing
    property with a default gets it (and the default is then defaulted in turn)."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        properties: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, dict) else {})
            result[key] = apply_defaults(item, child)
        for key, child in properties.items():
            if key not in result and "default" in child:
                result[key] = apply_defaults(copy.deepcopy(child["default"]), child)
        return result
    if isinstance(value, list):
        return [apply_defaults(item, node.get("items", {})) for item in value]
    return value


def defaulted(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = apply_defaults(copy.deepcopy(dict(obj)), openapi_schema(kind))
    return result


# --- CEL (x-kubernetes-validations) -------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One x-kubernetes-validations rule and the schema node it sits on; `path` holds property
    names, `[]` for array items and `{}` for map values."""

    path: tuple[str, ...]
    rule: str
    message: str
    node: Mapping[str, Any]
    field_path: str | None = None

    @property
    def transition(self) -> bool:
        """A transition rule (it reads oldSelf) runs on updates only."""
        return bool(_OLD_SELF.search(self.rule))

    @property
    def where(self) -> str:
        return ".".join(self.path) or "<root>"


def cel_rules(kind: str) -> list[CelRule]:
    return list(_walk_rules(openapi_schema(kind), ()))


def _walk_rules(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[CelRule]:
    for entry in node.get("x-kubernetes-validations", ()):
        message = entry.get("message", entry["rule"])
        yield CelRule(path, entry["rule"], message, node, entry.get("fieldPath"))
    for name, child in node.get("properties", {}).items():
        yield from _walk_rules(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from _walk_rules(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk_rules(node["additionalProperties"], (*path, "{}"))


def _values_at(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[object, ...], Any]]:
    """(concrete path, value) of every value that the schema path reaches in `value`."""
    if not path:
        yield (), value
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        children: list[tuple[object, Any]] = list(
            enumerate(value if isinstance(value, list) else [])
        )
    elif head == "{}":
        children = list(value.items()) if isinstance(value, dict) else []
    else:
        children = [(head, value[head])] if isinstance(value, dict) and head in value else []
    for key, child in children:
        for sub, found in _values_at(child, rest):
            yield (key, *sub), found


def _value_at(value: Any, concrete: tuple[object, ...]) -> tuple[bool, Any]:
    for key in concrete:
        if isinstance(key, int):
            # Kubernetes correlates old and new items only in map and set lists; none here.
            return False, None
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def typed_for_cel(value: Any, node: Mapping[str, Any]) -> Any:
    """`value` with the types the API server gives CEL: a `number` field is a double even
    when written as 50, so `50 == 50.0` holds as it does in Kubernetes."""
    kind = node.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        properties: Mapping[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties")
        return {
            key: typed_for_cel(item, properties.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [typed_for_cel(item, node.get("items", {})) for item in value]
    return value


@cache
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def compile_rule(rule: str) -> None:
    """Raises celpy.CELParseError where `rule` is not CEL."""
    _program(rule)


def evaluate_rule(rule: CelRule, new: Any, old: Any = None, *, has_old: bool = False) -> bool:
    """Whether `rule` holds with `self` bound to `new` (and `oldSelf` to `old`); an evaluation
    error counts as a violation, as it does in the API server."""
    activation: dict[str, Any] = {"self": json_to_cel(typed_for_cel(new, rule.node))}
    if has_old:
        activation["oldSelf"] = json_to_cel(typed_for_cel(old, rule.node))
    try:
        result = _program(rule.rule).evaluate(activation)
    except CELEvalError:
        return False
    return not isinstance(result, CELEvalError) and bool(result)


def rule_violations(
    kind: str, new: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> list[str]:
    """Messages of the rules a create (`old` None) or an update from `old` to `new` breaks.

    Both objects are defaulted first, as stored objects and incoming ones are. Transition rules
    run only on updates and only where the value exists in both, as in Kubernetes.
    """
    new_object = defaulted(kind, new)
    old_object = defaulted(kind, old) if old is not None else None
    messages: list[str] = []
    for rule in cel_rules(kind):
        for concrete, value in _values_at(new_object, rule.path):
            if rule.transition:
                if old_object is None:
                    continue
                present, old_value = _value_at(old_object, concrete)
                if not present:
                    continue
                holds = evaluate_rule(rule, value, old_value, has_old=True)
            else:
                holds = evaluate_rule(rule, value)
            if not holds:
                messages.append(rule.message)
    return messages
