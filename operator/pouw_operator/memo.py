"""What every handler gets from kopf as `memo`: the operator's settings, its metrics and its
Kubernetes client, and the background tasks its startup handlers start.

`main()` builds one with `OperatorMemo.create` and hands it to `kopf.run(memo=...)`. kopf passes
it to the operator's handlers (startup, cleanup) and a shallow copy of it to each resource's
handlers, so all of them share one set of settings, metrics, client and tasks. The tests'
harness builds its own through the same `create`, its test seam: fast settings, its own
OperatorMetrics and a client aimed at the in-memory API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from pouw_operator.kube import ApiClientFactory, AsyncKube, in_cluster_or_kubeconfig
from pouw_operator.metrics import METRICS, OperatorMetrics
from pouw_operator.settings import OperatorSettings


@dataclass
class OperatorMemo:
    settings: OperatorSettings
    metrics: OperatorMetrics
    kube: AsyncKube
    background: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """The tasks startup handlers start (the pollers), by name, for cleanup handlers to stop."""
    faucet_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One faucet transfer at a time: each takes the faucet's next nonce (pouw_operator.faucet)."""

    @classmethod
    def create(
        cls,
        settings: OperatorSettings,
        metrics: OperatorMetrics = METRICS,
        api_client: ApiClientFactory = in_cluster_or_kubeconfig,
    ) -> OperatorMemo:
        """`api_client` makes the Kubernetes client on first use (default: in-cluster, else
        kubeconfig); `metrics` default to the process's, which main() serves."""
        return cls(settings, metrics, AsyncKube(api_client))

    def start_background(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as an asyncio task named `name` until `stop_background(name)`."""
        self.background[name] = asyncio.create_task(work, name=name)

    async def stop_background(self, name: str) -> None:
        """Cancel the task started under `name`, and wait for it to end."""
        task = self.background.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close(self) -> None:
        """Close the Kubernetes client, if one was made."""
        self.kube.close()
