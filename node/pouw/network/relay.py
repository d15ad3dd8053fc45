"""Announce-then-fetch bookkeeping: what we have seen, what we asked whom for, what we serve.

An item travels as `inv` (ids) -> `getdata` -> `data`. Each item is asked of one peer at a
time; other peers that announce it meanwhile are remembered and asked in turn when the first
does not answer in time or goes away. Everything here is bounded: the seen set by count, the
payload cache by count and bytes, the requests by MAX_REQUESTS (an inv beyond it is ignored
until requests drain; the item is fetched on a later announcement), the announcements deferred
while the node cannot take more (`defer`) by MAX_DEFERRED, oldest forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from pouw.budgets import RELAY_DEFERRED, RELAY_REQUESTS
from pouw.network.messages import ItemKind
from pouw.network.peers import BoundedSet, Link

ItemKey = tuple[ItemKind, bytes]
MAX_REQUESTS: Final = RELAY_REQUESTS
MAX_ANNOUNCERS: Final = 8
MAX_DEFERRED: Final = RELAY_DEFERRED


@dataclass
class Request:
    link: Link
    asked_at: float
    asked: list[Link] = field(default_factory=list)
    others: list[Link] = field(default_factory=list)


class ItemRelay:
    def __init__(self, *, cache_items: int, cache_bytes: int, seen_items: int) -> None:
        self.cache_items = cache_items
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[ItemKey, bytes] = OrderedDict()
        self._cached_bytes = 0
        self.seen: BoundedSet[ItemKey] = BoundedSet(seen_items)
        self.requests: dict[ItemKey, Request] = {}
        self.importing: set[ItemKey] = set()
        """Arrived and waiting in the import queue: not to be fetched again meanwhile (at most
        the queue's size)."""
        self.deferred: OrderedDict[ItemKey, Link] = OrderedDict()
        """Announced items not fetched yet because the import queue had no room, oldest
        first, each with the peer that announced it."""

    # -- what we serve -----------------------------------------------------------------------

    def remember(self, key: ItemKey, payload: bytes) -> None:
        """Keep `payload` to answer getdata, and never fetch it again."""
        self.seen.add(key)
        self.requests.pop(key, None)
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= len(old)
        self._cache[key] = payload
        self._cached_bytes += len(payload)
        while self._cache and (
            len(self._cache) > self.cache_items or self._cached_bytes > self.cache_bytes
        ):
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted)

    def payload(self, key: ItemKey) -> bytes | None:
        return self._cache.get(key)

    # -- what we fetch -----------------------------------------------------------------------

    def should_fetch(self, key: ItemKey, link: Link, now: float) -> bool:
        """`link` announced `key`: True when we should ask it now."""
        if key in self.seen or key in self.importing:
            return False
        request = self.requests.get(key)
        if request is not None:
            known = link in request.asked or link in request.others
            if not known and len(request.others) < MAX_ANNOUNCERS:
                request.others.append(link)
            return False
        if len(self.requests) >= MAX_REQUESTS:
            return False
        self.requests[key] = Request(link, now, [link])
        return True

    def arrived(self, key: ItemKey, link: Link) -> bool:
        """`link` sent `key`: True when we asked it for that (the request is then done)."""
        request = self.requests.get(key)
        if request is None or link not in request.asked:
            return False
        del self.requests[key]
        self.importing.add(key)
        return True

    def imported(self, key: ItemKey) -> None:
        """The node has judged an item that arrived (`seen` or `remember` keep it from here)."""
        self.importing.discard(key)

    def unknown(self, key: ItemKey) -> bool:
        """Neither had, asked for, nor waiting to be imported."""
        return not (key in self.seen or key in self.requests or key in self.importing)

    def defer(self, key: ItemKey, link: Link) -> None:
        """`link` announced `key` while there was no room to take it: fetch it later."""
        if not self.unknown(key) or key in self.deferred:
            return
        self.deferred[key] = link
        while len(self.deferred) > MAX_DEFERRED:
            self.deferred.popitem(last=False)

    def take_deferred(self, count: int) -> list[tuple[ItemKey, Link]]:
        """Up to `count` deferred announcements, oldest first, whose peer is still there."""
        taken: list[tuple[ItemKey, Link]] = []
        while self.deferred and len(taken) < count:
            key, link = self.deferred.popitem(last=False)
            if link.ready and self.unknown(key):
                taken.append((key, link))
        return taken

    def forget(self, key: ItemKey) -> None:
        """We could not take the item after all (overloaded): a later inv may fetch it."""
        self.requests.pop(key, None)
        self.importing.discard(key)

    def retry(self, now: float, timeout_s: float) -> list[tuple[ItemKey, Link]]:
        """Requests whose peer went away or did not answer in `timeout_s`, each paired with
        the next announcer to ask; requests nobody else announced are dropped."""
        again: list[tuple[ItemKey, Link]] = []
        for key, request in list(self.requests.items()):
            if not request.link.closed and now - request.asked_at <= timeout_s:
                continue
            others = [link for link in request.others if link.ready]
            if not others:
                del self.requests[key]
                continue
            nxt = others[0]
            request.others = others[1:]
            request.link, request.asked_at = nxt, now
            request.asked.append(nxt)
            again.append((key, nxt))
        return again
