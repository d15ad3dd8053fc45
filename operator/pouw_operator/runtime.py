"""What every handler shares: the operator's settings, its metrics and a Kubernetes API client.

One way in: `configure()`. `main()` calls it once, before kopf starts; the tests' harness calls
it with fast settings, its own OperatorMetrics and a client aimed at the in-memory API server.
Handlers read `settings()`, `metrics()` and `api_client()` when they run, never at import, so
an operator restarted with other settings sees them. (kopf's `memo` would carry them too, but
not to code that runs outside a handler, such as the harness or `main()`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

from kubernetes import client, config

from pouw_operator.metrics import METRICS, OperatorMetrics
from pouw_operator.settings import OperatorSettings

ApiClientFactory = Callable[[], client.ApiClient]


def in_cluster_or_kubeconfig() -> client.ApiClient:
    """The pod's service account in a cluster, else the current kubeconfig context (an
    operator run from a laptop): the same order kopf logs in with."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


@dataclass
class _Runtime:
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    metrics: OperatorMetrics = METRICS
    factory: ApiClientFactory = in_cluster_or_kubeconfig
    client: client.ApiClient | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _Runtime()


def configure(
    settings: OperatorSettings,
    metrics: OperatorMetrics | None = None,
    api_client: ApiClientFactory | None = None,
) -> None:
    """Set what the handlers use from now on. `api_client` makes the Kubernetes client on
    first use (default: in-cluster, else kubeconfig); a client made before is dropped."""
    with _state.lock:
        if _state.client is not None:
            _state.client.close()  # type: ignore[no-untyped-call]
        _state.settings = settings
        _state.metrics = metrics or METRICS
        _state.factory = api_client or in_cluster_or_kubeconfig
        _state.client = None


def settings() -> OperatorSettings:
    return _state.settings


def metrics() -> OperatorMetrics:
    return _state.metrics


def api_client() -> client.ApiClient:
    """The one Kubernetes client of the process (thread-safe: handlers call it in threads)."""
    with _state.lock:
        if _state.client is None:
            _state.client = _state.factory()
        return _state.client


async def stop_background(memo: MutableMapping[str, object], name: str) -> None:
    """Cancel the background task a startup handler left in kopf's memo under `name`, and
    wait for it to end."""
    task = memo.get(name)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
