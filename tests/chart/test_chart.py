"""The Helm chart (charts/) through the real Helm SDK: helm-python-sdk binds Helm's Go library
with ctypes, so lint, --set parsing, values.schema.json and rendering are Helm's own, with no
helm binary, no cluster and no network.

Every rendered manifest is checked against the Kubernetes OpenAPI schema (kubernetes-validate,
strict) for the oldest Kubernetes the chart targets and the newest the package ships; PoUWNodes
against the CRD's schema and CEL rules; the Prometheus Operator kinds by their shape. The RBAC
test derives the verbs the operator needs from its code and wants exactly those granted."""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from pouw.blockchain.params import KUBERNETES_NODE_NAMES
from pouw_operator import kube
from pouw_operator.builders.genesis import FAUCET_SECRET
from pouw_operator.builders.secrets import API_ROOT_SECRET
from pouw_operator.builders.service import build_service
from pouw_operator.builders.statefulset import build_statefulset
from pouw_operator.main import HANDLER_MODULES, parse_args
from pouw_operator.resources import NodeResource, NodeSpec, PoUWNodeSpec
from pouw_operator.settings import API_PORT, P2P_PORT, OperatorSettings
from tests.operator.crd_schema import rule_violations, schema_errors

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts"
OPERATOR_SOURCES = REPO / "operator" / "pouw_operator"
RELEASE, NAMESPACE = "pouw", "pouw"
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
"""The oldest Kubernetes the chart targets (kind's default node image in CI) and the newest
that kubernetes-validate ships."""
ALL_ON = ",".join(
    [
        "network.enabled=true",
        "networkPolicy.enabled=true",
        "networkPolicy.metricsNamespaces={monitoring}",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        f"operator.watchNamespaces={{{NAMESPACE},lab}}",
    ]
)
"""Every toggle on, and a second served namespace (`helm --set` syntax)."""
NETWORK = {
    "supervisor": "supervisor",
    "miners": "miner",
    "verifier": "verifier",
    "evaluator": "evaluator",
    "client": "peer",
}
"""The default network's PoUWNodes (name -> role): the names the devnet genesis funds."""
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def merged(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result


def render(chart: helm.Chart, sets: str = "", json_sets: str = "") -> list[Manifest]:
    """The manifests `helm install --set <sets> --set-json <json_sets>` would apply (CRDs
    aside), NOTES.txt left out."""
    values = helm.parse_set_string(sets) if sets else {}
    if json_sets:
        values = merged(values, helm.parse_set_json(json_sets))
    rendered = chart.render(values or None, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


# --- lint and render ----------------------------------------------------------------------


@pytest.mark.parametrize("sets", ["", ALL_ON], ids=["defaults", "all-on"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_chart_passes_strict_lint(sets: str, version: str) -> None:
    values = helm.parse_set_string(sets) if sets else None
    report = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is information (Helm suggests an icon); 2 and above are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_defaults_render_the_operator_and_a_network(chart: helm.Chart) -> None:
    manifests = render(chart)
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        ["ServiceAccount"] * 2  # the operator's, the nodes'
        + ["Role", "RoleBinding", "Deployment", "Service"]
        + ["NetworkPolicy"] * 2
        + ["PoUWNode"] * len(NETWORK)
    )
    assert {m["metadata"]["namespace"] for m in manifests} == {NAMESPACE}
    nodes = {m["metadata"]["name"]: m["spec"] for m in of_kind(manifests, "PoUWNode")}
    assert {name: spec["role"] for name, spec in nodes.items()} == NETWORK
    assert set(nodes) <= set(KUBERNETES_NODE_NAMES)  # the pods the devnet genesis funds
    assert {name: spec["replicas"] for name, spec in nodes.items()} == {
        "supervisor": 1,
        "miners": 3,
        "verifier": 1,
        "evaluator": 1,
        "client": 1,
    }
    miners = nodes["miners"]
    # No public devnet by default: the operator makes the namespace's private chain.
    assert all("chainId" not in spec for spec in nodes.values())
    chains = {NodeSpec.parse(spec, NAMESPACE).chain_id for spec in nodes.values()}
    assert chains == {f"pouw-{NAMESPACE}"}
    assert (miners["stake"], miners["miningIntensity"]) == (100, 1)
    assert miners["resources"] == {"cpu": "500m", "memory": "1Gi", "gpu": 0}
    assert miners["storage"] == {"size": "1Gi"}
    assert "stake" not in nodes["client"]  # a peer stakes nothing


def test_the_public_devnet_is_only_what_is_asked_for(chart: helm.Chart) -> None:
    manifests = render(chart, "network.chainId=pouw-devnet")
    nodes = [m["spec"] for m in of_kind(manifests, "PoUWNode")]
    assert nodes and {spec["chainId"] for spec in nodes} == {"pouw-devnet"}


def test_values_reach_the_network(chart: helm.Chart) -> None:
    manifests = render(
        chart,
        "network.miners=5,network.clients=0,network.gpu=1,network.chainId=pouw-lab,"
        "network.storage.storageClassName=fast",
        # helm --set reads 0.25 as a string (only integers are typed): fractions go in JSON.
        json_sets="network.stake=250.5,network.miningIntensity=0.25",
    )
    nodes = {m["metadata"]["name"]: m["spec"] for m in of_kind(manifests, "PoUWNode")}
    assert "client" not in nodes  # a count of 0 leaves the PoUWNode out
    miners = nodes["miners"]
    assert (miners["replicas"], miners["stake"], miners["miningIntensity"]) == (5, 250.5, 0.25)
    assert miners["resources"]["gpu"] == 1
    assert "gpu" not in nodes["verifier"]["resources"]  # GPUs go to the miners only
    assert {spec["chainId"] for spec in nodes.values()} == {"pouw-lab"}
    assert miners["storage"] == {"size": "1Gi", "storageClassName": "fast"}


@pytest.mark.parametrize(
    ("sets", "absent"),
    [
        ("network.enabled=false", "PoUWNode"),
        ("networkPolicy.enabled=false", "NetworkPolicy"),
        ("", "ServiceMonitor"),
        ("", "PrometheusRule"),
        ("", "ConfigMap"),
    ],
)
def test_each_toggle_leaves_its_objects_out(chart: helm.Chart, sets: str, absent: str) -> None:
    assert of_kind(render(chart, sets), absent) == []


def test_every_toggle_on_renders_monitoring(chart: helm.Chart) -> None:
    manifests = render(chart, ALL_ON)
    assert len(of_kind(manifests, "ServiceMonitor")) == 2
    assert len(of_kind(manifests, "PrometheusRule")) == 1
    dashboard = one(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text("utf-8"))
    assert json.loads(dashboard["data"]["pouw.json"]) == shipped
    for monitor in of_kind(manifests, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "prometheus"


# --- every manifest is valid --------------------------------------------------------------


def prometheus_operator_problems(manifest: Manifest) -> list[str]:
    """The shape of a ServiceMonitor or PrometheusRule (no schema of theirs ships here)."""
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or not manifest.get("metadata", {}).get("name"):
        return ["needs metadata.name and a spec"]
    if manifest["kind"] == "ServiceMonitor":
        endpoints = spec.get("endpoints")
        problems = [] if spec.get("selector", {}).get("matchLabels") else ["no selector"]
        if not endpoints or not all(
            isinstance(e.get("port"), str) and str(e.get("path", "/")).startswith("/")
            for e in endpoints
        ):
            problems.append("endpoints need a named port and a path")
        if not spec.get("namespaceSelector", {}).get("matchNames"):
            problems.append("no namespaceSelector.matchNames")
        return problems
    if manifest["kind"] == "PrometheusRule":
        groups = spec.get("groups")
        if not groups or not all(g.get("name") and g.get("rules") for g in groups):
            return ["groups need a name and rules"]
        return [
            f"rule {rule!r} needs alert or record and expr"
            for group in groups
            for rule in group["rules"]
            if not (rule.get("alert") or rule.get("record")) or not rule.get("expr")
        ]
    return [f"unknown kind {manifest['kind']}"]


@pytest.mark.parametrize("sets", ["", ALL_ON], ids=["defaults", "all-on"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_manifest_is_valid(chart: helm.Chart, sets: str, version: str) -> None:
    for manifest in render(chart, sets):
        where = f"{manifest['kind']} {manifest['metadata']['name']}"
        if manifest["kind"] == "PoUWNode":
            assert schema_errors("PoUWNode", manifest, strict=True) == {}, where
            assert rule_violations("PoUWNode", manifest) == [], where
        elif manifest["apiVersion"] == PROMETHEUS_OPERATOR:
            assert prometheus_operator_problems(manifest) == [], where
        else:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_the_prometheus_operator_check_catches_a_broken_shape() -> None:
    """The hand-written check above must be able to fail."""
    rule = {
        "apiVersion": PROMETHEUS_OPERATOR,
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]},
    }
    monitor = {**rule, "kind": "ServiceMonitor", "spec": {"endpoints": [{"port": 8080}]}}
    assert prometheus_operator_problems(rule) != []
    assert len(prometheus_operator_problems(monitor)) == 3


# --- wrong values fail at render, naming the field -----------------------------------------


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        ("network.miners=abc", "/network/miners"),  # a string replica count
        ("network.wizards=1", "'wizards'"),  # an unknown role
        ("network.storage.class=fast", "'class'"),  # an unknown field, deeper down
        ("telemetry.enabled=true", "'telemetry'"),  # an unknown top-level key
        ("network.stake=-5", "/network/stake"),
        ("network.miners=17", "/network/miners"),  # past the pods the genesis funds
        ("network.miningIntensity=1.5", "/network/miningIntensity"),
        ("network.resources.memory=lots", "/network/resources/memory"),
        ("operator.replicas=2", "/operator/replicas"),  # kopf runs standalone
        ("operator.pollSeconds=0", "/operator/pollSeconds"),
        ("operator.logLevel=LOUD", "/operator/logLevel"),
        ("operator.watchNamespaces={Not_A_Namespace}", "/operator/watchNamespaces/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("metrics.prometheusRule.enabled=yes please", "/metrics/prometheusRule/enabled"),
    ],
)
def test_a_wrong_value_fails_at_render_naming_the_field(
    chart: helm.Chart, sets: str, named: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(named)):
        render(chart, sets)


def test_a_network_the_operator_does_not_serve_fails_at_render(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"operator\.watchNamespaces"):
        render(chart, "operator.watchNamespaces={lab}")
    assert of_kind(render(chart, "operator.watchNamespaces={lab},network.enabled=false"), "Role")


def test_every_default_value_is_typed_and_bounded() -> None:
    """values.schema.json leaves no value open: objects are closed, numbers bounded, strings
    patterned or enumerated."""
    schema = json.loads((CHART / "values.schema.json").read_text("utf-8"))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))

    def check(value: Any, node: Mapping[str, Any], path: str) -> Iterator[str]:
        kind = node.get("type")
        if isinstance(value, dict):
            if node.get("additionalProperties") is not False and "propertyNames" not in node:
                yield f"{path}: open object"
            for key, item in value.items():
                child = node.get("properties", {}).get(key, node.get("additionalProperties"))
                if not isinstance(child, dict):
                    yield f"{path}.{key}: no schema"
                else:
                    yield from check(item, child, f"{path}.{key}")
        elif isinstance(value, list):
            if kind != "array" or "maxItems" not in node:
                yield f"{path}: unbounded list"
        elif isinstance(value, bool):
            if kind != "boolean":
                yield f"{path}: not typed boolean"
        elif isinstance(value, int | float):
            if kind not in ("integer", "number") or not {"minimum", "maximum"} <= node.keys():
                yield f"{path}: unbounded number"
        elif isinstance(value, str) and (kind != "string" or not {"enum", "pattern"} & node.keys()):
            yield f"{path}: free string"

    assert list(check(defaults, schema, "values")) == []


# --- what the chart copies ----------------------------------------------------------------


def test_the_charts_crds_are_the_repos_byte_for_byte(chart: helm.Chart) -> None:
    repo = {path.name: path.read_bytes() for path in (REPO / "crds").glob("*.yaml")}
    copied = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}
    assert copied == repo, "run: cp crds/*.yaml charts/crds/"
    assert sorted(crd["filename"] for crd in chart.crds) == sorted(f"pouw/crds/{n}" for n in repo)


def test_the_prometheus_rule_is_the_alerts_file(chart: helm.Chart) -> None:
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text("utf-8"))
    rule = one(render(chart, "metrics.prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == alerts["groups"]


# --- the operator Deployment --------------------------------------------------------------


def operator_container(manifests: list[Manifest]) -> Manifest:
    deployment = one(manifests, "Deployment", "pouw-operator")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: Manifest = containers[0]
    return found


def operator_pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    labels: dict[str, str] = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_operator_gets_its_settings_and_namespaces(chart: helm.Chart) -> None:
    manifests = render(
        chart,
        "image.repository=registry.example/pouw,image.tag=1.2.3",
        json_sets="operator.pollSeconds=2.5",
    )
    container = operator_container(manifests)
    assert container["image"] == "registry.example/pouw:1.2.3"
    assert container["command"] == ["pouw-operator"]
    env = {entry["name"]: entry["value"] for entry in container["env"]}
    # The operator reads them as it will in the pod (settings.py).
    settings = OperatorSettings.from_env(env)
    assert settings.node_image == "registry.example/pouw:1.2.3"
    assert settings.poll_interval_s == 2.5
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": settings.metrics_port, "liveness": settings.liveness_port}
    assert parse_args(container["args"]).namespaces == [NAMESPACE]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two kopf operators
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_operator_serves_each_watched_namespace(chart: helm.Chart) -> None:
    manifests = render(chart, ALL_ON)
    assert parse_args(operator_container(manifests)["args"]).namespaces == [NAMESPACE, "lab"]


def test_the_operator_runs_as_non_root_on_a_read_only_root(chart: helm.Chart) -> None:
    manifests = render(chart)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    operator_account = one(manifests, "ServiceAccount", "pouw-operator")
    assert pod["serviceAccountName"] == operator_account["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    security = operator_container(manifests)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


# --- RBAC: exactly the verbs the code uses ------------------------------------------------


@dataclass(frozen=True, order=True)
class Grant:
    group: str
    resource: str
    verb: str


KUBE_VERBS = {
    "get": ("get",),
    "list": ("list",),
    "create": ("create",),
    "patch": ("patch",),
    "delete": ("delete",),
    "ensure": ("create",),
    "create_or_patch": ("create", "get", "patch"),
}
"""pouw_operator.kube's calls and the API verbs each one makes."""


def _grants(kind: kube.Kind, verbs: tuple[str, ...], subresource: str | None) -> set[Grant]:
    group = "" if kind.api_version == "v1" else kind.api_version.split("/")[0]
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    return {Grant(group, resource, verb) for verb in verbs}


def _kind_constant(node: ast.expr) -> kube.Kind | None:
    """SECRET or kube.SECRET: a Kind constant of pouw_operator.kube."""
    name = node.id if isinstance(node, ast.Name) else None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        name = node.attr if node.value.id == "kube" else None
    value = getattr(kube, name, None) if name else None
    return value if isinstance(value, kube.Kind) else None


def _is_kube(receiver: ast.expr) -> bool:
    """`kube.<verb>(...)` (the module) or `self.kube.<verb>(...)` (a Kube)."""
    if isinstance(receiver, ast.Name):
        return receiver.id == "kube"
    return isinstance(receiver, ast.Attribute) and receiver.attr == "kube"


@cache
def code_grants() -> frozenset[Grant]:
    """Every (group, resource, verb) the operator's handlers call the Kubernetes API with,
    found by reading operator/pouw_operator/**/*.py. A Kind passed in through a parameter (such
    as payments.write(kind, ...)) is followed to the callers of that function, called by its
    name (in its own module, or imported by name) or as module.function."""
    found: set[Grant] = set()
    forwarded: list[tuple[str, str, int, tuple[str, ...], str | None]] = []
    calls: list[ast.Call] = []
    for source in sorted(OPERATOR_SOURCES.rglob("*.py")):
        if source.name == "kube.py":  # the wrappers themselves; their callers count
            continue
        tree = ast.parse(source.read_text("utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            parameters = [arg.arg for arg in function.args.args]
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                calls.append(node)
                func = node.func
                if not (
                    isinstance(func, ast.Attribute)
                    and func.attr in KUBE_VERBS
                    and _is_kube(func.value)
                    and node.args
                ):
                    continue
                verbs = KUBE_VERBS[func.attr]
                subresource = _subresource(node) if func.attr == "patch" else None
                kind = _kind_constant(node.args[0])
                if kind is not None:
                    found |= _grants(kind, verbs, subresource)
                elif isinstance(node.args[0], ast.Name) and node.args[0].id in parameters:
                    position = parameters.index(node.args[0].id)
                    forwarded.append((source.stem, function.name, position, verbs, subresource))
                else:
                    raise AssertionError(
                        f"{source.name}:{node.lineno}: cannot tell the Kind of a kube call"
                    )
    for module, name, position, verbs, subresource in forwarded:
        for call in calls:
            callee = call.func
            by_name = isinstance(callee, ast.Name) and callee.id == name
            by_module = (
                isinstance(callee, ast.Attribute)
                and callee.attr == name
                and isinstance(callee.value, ast.Name)
                and callee.value.id == module
            )
            if (by_name or by_module) and len(call.args) > position:
                kind = _kind_constant(call.args[position])
                assert kind is not None, f"{name}() called with a Kind not known here"
                found |= _grants(kind, verbs, subresource)
    return frozenset(found)


def _subresource(call: ast.Call) -> str | None:
    value: ast.expr | None = call.args[4] if len(call.args) > 4 else None
    for keyword in call.keywords:
        if keyword.arg == "subresource":
            value = keyword.value
    if value is None:
        return None
    assert isinstance(value, ast.Constant) and isinstance(value.value, str), "subresource?"
    return value.value


def kopf_grants() -> set[Grant]:
    """What kopf itself does for each resource it serves (pouw_operator.main imports the
    handler modules; each names its RESOURCE): list and watch them, patch its progress
    annotations and the handlers' status, and post warning Events. With namespaces given,
    scanning is off: no cluster-wide namespaces or CRDs."""
    grants = {Grant("", "events", "create")}
    for module_name in HANDLER_MODULES:
        group, _version, plural = importlib.import_module(module_name).RESOURCE
        grants |= {Grant(group, plural, verb) for verb in ("list", "watch", "patch")}
        grants.add(Grant(group, f"{plural}/status", "patch"))
    return grants


def granted(role: Manifest) -> set[Grant]:
    return {
        Grant(group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_code_scan_finds_the_calls_it_must() -> None:
    """Guards the scanner: it must see calls in children.py, the handlers, directory.py and
    payments.write."""
    assert {
        Grant("", "secrets", "create"),
        Grant("apps", "statefulsets", "patch"),
        Grant("pouw.network", "pouwnodes", "list"),
        Grant("pouw.network", "pouwnodes/status", "patch"),
        Grant("pouw.network", "stakes/status", "patch"),  # through payments.write(STAKE, ...)
    } <= code_grants()


@pytest.mark.parametrize("sets", ["", ALL_ON], ids=["defaults", "all-on"])
def test_rbac_grants_exactly_what_the_operator_uses(chart: helm.Chart, sets: str) -> None:
    manifests = render(chart, sets)
    needed = set(code_grants()) | kopf_grants()
    namespaces = parse_args(operator_container(manifests)["args"]).namespaces
    roles = of_kind(manifests, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == sorted(namespaces)
    for role in roles:
        assert granted(role) - needed == set(), "granted but not used"
        assert needed - granted(role) == set(), "used but not granted"
    role_names = {role["metadata"]["namespace"]: role["metadata"]["name"] for role in roles}
    service_account = one(manifests, "ServiceAccount", "pouw-operator")["metadata"]
    bindings = of_kind(manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(namespaces)
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role_names[binding["metadata"]["namespace"]],
        }
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": service_account["name"],
                "namespace": service_account["namespace"],
            }
        ]
    assert not of_kind(manifests, "ClusterRole") and not of_kind(manifests, "ClusterRoleBinding")


def test_the_operator_may_read_no_secret_but_its_own_two_by_name(chart: helm.Chart) -> None:
    """RBAC cannot narrow `create` by name, and every other verb on a Secret (patch, update,
    delete too) answers with its data: the Role grants `create`, and `get` of the faucet and
    the API token root by their fixed names, nothing else on Secrets."""
    for sets in ("", ALL_ON):
        for role in of_kind(render(chart, sets), "Role"):
            rules = [r for r in role["rules"] if "secrets" in r["resources"]]
            assert all(r["resources"] == ["secrets"] and r["apiGroups"] == [""] for r in rules)
            unnamed = {verb for r in rules if not r.get("resourceNames") for verb in r["verbs"]}
            assert unnamed == {"create"}
            named = [r for r in rules if r.get("resourceNames")]
            assert [(r["verbs"], sorted(r["resourceNames"])) for r in named] == [
                (["get"], sorted([FAUCET_SECRET, API_ROOT_SECRET]))
            ]


def test_node_pods_run_under_an_account_with_no_role_and_no_token(chart: helm.Chart) -> None:
    manifests = render(chart, ALL_ON)
    accounts = [
        a for a in of_kind(manifests, "ServiceAccount") if a["metadata"]["name"] != "pouw-operator"
    ]
    assert sorted(a["metadata"]["namespace"] for a in accounts) == sorted([NAMESPACE, "lab"])
    assert {a["metadata"]["name"] for a in accounts} == {"pouw-node"}
    assert all(a["automountServiceAccountToken"] is False for a in accounts)
    bound = {s["name"] for b in of_kind(manifests, "RoleBinding") for s in b["subjects"]}
    assert "pouw-node" not in bound
    env = {e["name"]: e.get("value") for e in operator_container(manifests)["env"]}
    settings = OperatorSettings.from_env(env)
    pod = build_statefulset(_sample_node(), settings, [])["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pouw-node"
    assert pod["automountServiceAccountToken"] is False


# --- networking and monitoring ------------------------------------------------------------


def _sample_node() -> NodeResource:
    """A PoUWNode as the operator sees one of the chart's: its children's labels and ports."""
    return NodeResource("miners", NAMESPACE, "uid", PoUWNodeSpec(role="miner"))


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def _node_policies(manifests: list[Manifest]) -> list[Manifest]:
    return [p for p in of_kind(manifests, "NetworkPolicy") if p["metadata"]["name"] == "pouw-nodes"]


def _peers_by_port(rules: list[Manifest], direction: str) -> dict[tuple[int, str], list[Manifest]]:
    """(port, protocol) -> the peers a rule admits there."""
    found: dict[tuple[int, str], list[Manifest]] = {}
    for rule in rules:
        for port in rule["ports"]:
            found.setdefault((port["port"], port["protocol"]), []).extend(rule[direction])
    return found


def test_the_node_api_admits_only_the_operator_clients_and_prometheus(chart: helm.Chart) -> None:
    """Any other pod of the namespace (a subverted workload) cannot reach a node's API."""
    manifests = render(chart, ALL_ON)
    pod = build_statefulset(_sample_node(), OperatorSettings(), [])["spec"]["template"]
    operator_pod = operator_pod_labels(manifests)
    node_policies = _node_policies(manifests)
    assert sorted(p["metadata"]["namespace"] for p in node_policies) == sorted([NAMESPACE, "lab"])
    for policy in node_policies:
        spec = policy["spec"]
        assert _selects(spec["podSelector"], pod["metadata"]["labels"])
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        by_port = _peers_by_port(spec["ingress"], "from")
        assert set(by_port) == {(P2P_PORT, "TCP"), (API_PORT, "TCP")}
        (p2p_peer,) = by_port[(P2P_PORT, "TCP")]
        assert set(p2p_peer) == {"podSelector"}  # the namespace's node pods only
        assert _selects(p2p_peer["podSelector"], pod["metadata"]["labels"])
        operator_peer, client_peer, prometheus_peer = by_port[(API_PORT, "TCP")]
        assert operator_peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert _selects(operator_peer["podSelector"], operator_pod)
        assert client_peer == {"podSelector": {"matchLabels": {"pouw.network/api-client": "true"}}}
        assert not _selects(client_peer["podSelector"], {"app.kubernetes.io/name": "other"})
        assert prometheus_peer == {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["monitoring"],
                    }
                ]
            }
        }
        assert {"podSelector": {}} not in by_port[(API_PORT, "TCP")]  # not the whole namespace
    operator_policy = one(manifests, "NetworkPolicy", "pouw-operator")["spec"]
    assert _selects(operator_policy["podSelector"], operator_pod)
    defaults = OperatorSettings()
    assert sorted(rule["ports"][0]["port"] for rule in operator_policy["ingress"]) == [
        defaults.metrics_port,
        defaults.liveness_port,
    ]


def test_node_egress_is_peers_and_dns_only_by_default(chart: helm.Chart) -> None:
    """A subverted node cannot call the Kubernetes API, another namespace's pods, the node
    APIs of its peers or the internet: it reaches its peers' p2p port and DNS."""
    pod = build_statefulset(_sample_node(), OperatorSettings(), [])["spec"]["template"]
    for policy in _node_policies(render(chart)):
        by_port = _peers_by_port(policy["spec"]["egress"], "to")
        assert set(by_port) == {(P2P_PORT, "TCP"), (53, "UDP"), (53, "TCP")}
        (peers,) = by_port[(P2P_PORT, "TCP")]
        assert set(peers) == {"podSelector"}  # this namespace's node pods
        assert _selects(peers["podSelector"], pod["metadata"]["labels"])
        dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        assert by_port[(53, "UDP")] == by_port[(53, "TCP")] == [dns]


def test_dataset_hosts_are_admitted_by_cidr_and_port_when_listed(chart: helm.Chart) -> None:
    hosts = json.dumps(
        [
            {"cidr": "203.0.113.0/24", "ports": [443, 8443]},
            {"cidr": "2001:db8::/32", "ports": [443]},
        ]
    )
    manifests = render(chart, json_sets=f"networkPolicy.datasetEgress={hosts}")
    for policy in _node_policies(manifests):
        kubernetes_validate.validate(policy, K8S_VERSIONS[-1], strict=True)
        egress = policy["spec"]["egress"]
        dataset_rules = [rule for rule in egress if "ipBlock" in rule["to"][0]]
        assert dataset_rules == [
            {
                "ports": [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            },
            {
                "ports": [{"port": 443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "2001:db8::/32"}}],
            },
        ]


@pytest.mark.parametrize(
    "bad",
    [
        '[{"cidr": "example.com", "ports": [443]}]',  # a name: a NetworkPolicy needs addresses
        '[{"cidr": "203.0.113.0/24", "ports": []}]',
        '[{"cidr": "203.0.113.0/24", "ports": [70000]}]',
        '[{"cidr": "203.0.113.0/24"}]',
    ],
)
def test_a_bad_dataset_host_fails_the_install_naming_the_field(chart: helm.Chart, bad: str) -> None:
    with pytest.raises(Exception, match="datasetEgress"):
        render(chart, json_sets=f"networkPolicy.datasetEgress={bad}")


def test_service_monitors_select_the_node_and_operator_services(chart: helm.Chart) -> None:
    manifests = render(chart, ALL_ON)
    node_service = build_service(_sample_node())
    nodes = one(manifests, "ServiceMonitor", "pouw-nodes")["spec"]
    assert _selects(nodes["selector"], node_service["metadata"]["labels"])
    assert nodes["namespaceSelector"]["matchNames"] == [NAMESPACE, "lab"]
    assert [e["port"] for e in nodes["endpoints"]] == ["api"]
    assert "api" in {port["name"] for port in node_service["spec"]["ports"]}
    # job="pouw-node", as files/alerts.yaml's expressions expect
    assert node_service["metadata"]["labels"][nodes["jobLabel"]] == "pouw-node"
    operator = one(manifests, "ServiceMonitor", "pouw-operator")["spec"]
    service = one(manifests, "Service", "pouw-operator")
    assert _selects(operator["selector"], service["metadata"]["labels"])
    assert [e["port"] for e in operator["endpoints"]] == ["metrics"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert _selects({"matchLabels": service["spec"]["selector"]}, operator_pod_labels(manifests))


def test_notes_say_what_to_run_next(chart: helm.Chart) -> None:
    rendered = chart.render(name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = rendered["pouw/templates/NOTES.txt"]
    for command in (
        "kubectl -n pouw apply -f examples/mytask.yaml",
        "kubectl -n pouw get mltasks -w",
        "pouw task model",
        "kubectl -n pouw scale pn/miners",
    ):
        assert command in notes
