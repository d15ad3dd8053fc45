"""What the alert rules and the dashboard may query: the series names the node and the operator
export, and the metric names a PromQL expression reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from pouw.monitoring.metrics import NodeMetrics
from pouw_operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "charts" / "files" / "alerts.yaml"
DASHBOARD_FILE = ROOT / "charts" / "files" / "dashboard.json"
RUNBOOK_FILE = ROOT / "docs" / "runbook.md"

SCRAPE_SERIES = frozenset({"up"})
"""What Prometheus itself writes for every target."""

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*(?![\w:(])(?!\s*\()")


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exports, whether or not a labelled child exists yet."""
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def exported_names() -> set[str]:
    return (
        series_names(NodeMetrics().registry)
        | series_names(OperatorMetrics(CollectorRegistry()).registry)
        | SCRAPE_SERIES
    )


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in matchers or grouping clauses) or durations."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS_FILE.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings."""
    anchors = set()
    for line in RUNBOOK_FILE.read_text().splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(slug.replace(" ", "-"))
    return anchors
