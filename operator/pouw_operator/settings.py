"""The operator's settings, from its environment (the chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pouw_operator.errors import OperatorError

DEFAULT_NODE_IMAGE = "pouw:latest"
P2P_PORT = 8000
API_PORT = 8080


class SettingsError(OperatorError, ValueError):
    """A bad POUW_OPERATOR_* value: names the variable, the value and what is allowed."""


@dataclass(frozen=True)
class OperatorSettings:
    node_image: str = DEFAULT_NODE_IMAGE
    """The image of node pods whose PoUWNode names none (POUW_NODE_IMAGE)."""
    node_url: str | None = None
    """One API URL for every node instead of each pod's in-cluster address
    (POUW_OPERATOR_NODE_URL): an operator outside the cluster, or a test driving a devnet."""
    api_token: str | None = None
    """The node API token when node_url is set (POUW_OPERATOR_API_TOKEN); in a cluster the
    operator derives each node's own (builders/secrets.py)."""
    node_service_account: str | None = None
    """The ServiceAccount of node pods (POUW_NODE_SERVICE_ACCOUNT; the chart's, bound to no
    Role); unset: the namespace's default. Either way no token is mounted."""
    poll_interval_s: float = 5.0
    """How often task, stake and node status are refreshed (POUW_OPERATOR_POLL_SECONDS)."""
    metrics_port: int = 8080
    """Prometheus metrics (POUW_OPERATOR_METRICS_PORT); 0 turns the server off."""
    liveness_port: int = 8081
    """kopf's liveness endpoint, /healthz (POUW_OPERATOR_LIVENESS_PORT)."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR (POUW_LOG_LEVEL, as for nodes)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            node_image=env.get("POUW_NODE_IMAGE") or defaults.node_image,
            node_url=(env.get("POUW_OPERATOR_NODE_URL") or "").rstrip("/") or None,
            api_token=env.get("POUW_OPERATOR_API_TOKEN") or None,
            node_service_account=env.get("POUW_NODE_SERVICE_ACCOUNT") or None,
            poll_interval_s=_seconds(env, "POUW_OPERATOR_POLL_SECONDS", defaults.poll_interval_s),
            metrics_port=_port(env, "POUW_OPERATOR_METRICS_PORT", defaults.metrics_port),
            liveness_port=_port(env, "POUW_OPERATOR_LIVENESS_PORT", defaults.liveness_port),
            log_level=_log_level(env, "POUW_LOG_LEVEL", defaults.log_level),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:
        raise SettingsError(f"{name}={raw!r} is invalid: seconds between 0.05 and 3600")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingsError(f"{name}={raw!r} is invalid: a port 0..65535 (0: off)")
    return int(raw)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"{name}={raw!r} is invalid: one of {', '.join(LOG_LEVELS)}")
    return raw.upper()
