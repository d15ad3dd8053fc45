"""The import queue: what peers sent for the node to judge (items, sync batches), bounded by
count and by bytes (per link and in total: pouw.budgets), drained in arrival order by a single
worker, so that the node sees one call at a time and the read loops never wait for it (pings,
inv and getdata keep flowing during a slow import).

Each job names its `Importer` (item gossip, or sync), which judges it and says what becomes
of it when the queue is full (`refused`) and when the node raises on it (`failed`); a
DropMessage it raises scores its link like any refused frame. A job is a plain tuple: tens of
thousands go through a second, so it allocates nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from pouw.budgets import IMPORT_BYTES_PER_PEER, IMPORT_BYTES_TOTAL, ByteBudget
from pouw.network.drops import DropReason
from pouw.network.messages import Blocks, Data, DropMessage, message_type
from pouw.network.peers import Link

log = logging.getLogger("pouw.network")


Imported = Data | Blocks


class Importer(Protocol):
    """The part a job belongs to."""

    async def judge(self, link: Link, body: Imported) -> None:
        """Hand the body to the node and act on its verdict."""
        ...

    def refused(self, link: Link, body: Imported) -> None:
        """The queue was full: the job is dropped (and counted as overloaded)."""
        ...

    def failed(self, link: Link, body: Imported) -> None:
        """The node raised on the job."""
        ...


ImportJob = tuple[Link, Imported, Importer, int]
"""The link, the body, its importer and the job's number (its charge in the byte budget)."""


class ImportQueue:
    def __init__(
        self,
        size: int,
        *,
        penalise: Callable[[Link, DropReason | str], None],
        count_drop: Callable[[DropReason], None],
        budget: ByteBudget[Link, int] | None = None,
    ) -> None:
        self._queue: asyncio.Queue[ImportJob] = asyncio.Queue(size)
        self.budget = budget or ByteBudget(IMPORT_BYTES_PER_PEER, IMPORT_BYTES_TOTAL)
        """The bytes of the jobs waiting, per link and in total."""
        self._jobs = 0
        self._penalise = penalise
        self._count_drop = count_drop
        self._listeners: list[Callable[[], None]] = []

    @property
    def size(self) -> int:
        return self._queue.maxsize

    def room(self) -> int:
        """Jobs the queue can take now."""
        return self._queue.maxsize - self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()

    def waiting(self) -> int:
        """Jobs not yet taken by the worker (the node's import backlog)."""
        return self._queue.qsize()

    def after_each(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a job is done (imported or not)."""
        self._listeners.append(listener)

    def put(self, link: Link, body: Imported, importer: Importer) -> None:
        self._jobs += 1
        size = len(body.payload) if isinstance(body, Data) else sum(map(len, body.blocks))
        refused = self._queue.full() or self.budget.charge(self._jobs, link, size) is not None
        if refused:
            self._count_drop(DropReason.OVERLOADED)
            importer.refused(link, body)
            return
        self._queue.put_nowait((link, body, importer, self._jobs))

    async def run(self) -> None:
        """The worker: runs until cancelled."""
        while True:
            link, body, importer, number = await self._queue.get()
            self.budget.release(number)
            try:
                await importer.judge(link, body)
            except DropMessage as drop:
                self._penalise(link, drop.reason)
            except Exception:
                log.exception("the node failed on a %s from %s", message_type(body), link.label)
                self._count_drop(DropReason.HANDLER_ERROR)
                importer.failed(link, body)
            for listener in self._listeners:
                listener()
            # A queue that is never empty never suspends get(): without this the worker would
            # keep the loop through a flood, and timers, pings and the miner's blocks would wait.
            await asyncio.sleep(0)
