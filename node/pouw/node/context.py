"""What every part of a node shares, built once by the composition root (node.py): its
identity and settings, its metrics and counters, its reputation table, its task book, the
events it runs on, and the background work (the loop, spawned tasks, the checking thread)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pouw.blockchain.params import ChainParams
from pouw.config import NodeConfig
from pouw.crypto import KeyPair
from pouw.economics.reputation import Reputation
from pouw.ml.dataset_files import DatasetSource
from pouw.monitoring.metrics import NodeMetrics
from pouw.node.events import NodeEvents
from pouw.node.tasks import TaskBook
from pouw.roles import NodeRole

T = TypeVar("T")


class Background:
    """The node's event loop once it runs, the tasks spawned on it, and one thread for the
    heavy checks (re-running a block, scoring final models) so the loop never waits."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._checker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pouw-check")

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the node's loop (from a mining or checking thread)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    async def check(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work` in the checking thread, one at a time."""
        return await asyncio.get_running_loop().run_in_executor(self._checker, work, *args)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def shutdown(self) -> None:
        self._checker.shutdown(wait=True)


@dataclass
class Counters:
    """What the node counts of its own work and its checks (the seed API's `stats`)."""

    metrics: NodeMetrics
    blocks_mined: int = 0
    rewards_earned: int = 0
    """Base units paid to this node on the main chain."""
    blocks_verified: int = 0
    blocks_rejected: int = 0
    attacks_detected: Counter[str] = field(default_factory=Counter)

    def rejected(self, reason: str) -> None:
        self.blocks_rejected += 1
        self.metrics.blocks_rejected.labels(reason).inc()

    def verified(self) -> None:
        self.blocks_verified += 1
        self.metrics.blocks_verified.inc()

    def attack(self, kind: str) -> None:
        self.attacks_detected[kind] += 1
        self.metrics.attacks_detected.labels(kind).inc()


@dataclass
class NodeContext:
    node_id: str
    role: NodeRole
    config: NodeConfig
    params: ChainParams
    key: KeyPair
    metrics: NodeMetrics
    counters: Counters
    reputation: Reputation
    tasks: TaskBook
    events: NodeEvents
    background: Background

    @property
    def address(self) -> str:
        return self.key.address

    @property
    def datasets(self) -> DatasetSource:
        """Where this node may read a task's dataset file from."""
        config = self.config
        return DatasetSource(config.dataset_directory, frozenset(config.dataset_hosts))
