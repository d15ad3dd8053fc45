"""Peer bookkeeping: links, ban scores, bans, token-bucket rate limits and the address book.

Nothing here does I/O; the Network drives it.
"""

from __future__ import annotations

import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from pouw.budgets import KNOWN_ITEMS_PER_LINK, SERVE_AGAIN_AFTER_S
from pouw.network.messages import CHALLENGE_SIZE, ChainInfo, ItemKind

K = TypeVar("K", bound=Hashable)


class BoundedSet(Generic[K]):
    """Insertion-ordered set that forgets its oldest members beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, None] = OrderedDict()

    def add(self, item: K) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def discard(self, item: K) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; one token per frame."""

    rate_per_s: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def refund(self) -> None:
        """Give back the token of a frame that turned out to be an answer we asked for."""
        self.tokens = min(self.burst, self.tokens + 1)


@dataclass
class BanScore:
    """Misbehaviour points that fade at `decay_per_s`, so honest peers' rare slips never add
    up to a ban while a burst of garbage does."""

    decay_per_s: float
    value: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def add(self, points: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.value = max(0.0, self.value - (now - self.updated) * self.decay_per_s) + points
        self.updated = now
        return self.value

    def current(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(0.0, self.value - (now - self.updated) * self.decay_per_s)


class Sent(Protocol):
    """A frame handed to ZeroMQ (its MessageTracker): done once ZeroMQ let go of it, written
    to the peer's socket or discarded with it."""

    @property
    def done(self) -> bool: ...


class _Written:
    done = True


WRITTEN: Final[Sent] = _Written()
"""A frame already out of our hands (a transport that does not track its frames)."""

Sender = Callable[[bytes], Sent | None]
"""Queues one frame to the peer without waiting; None when it could not."""


@dataclass
class OutboundBytes:
    """Frames queued to one peer that ZeroMQ has not written to its socket yet, and their
    bytes: what a peer that does not read makes us hold."""

    frames: deque[tuple[Sent, int]] = field(default_factory=deque)
    bytes: int = 0
    stalled: bool = False
    """The peer passed its bound: nothing more is sent to it."""

    def add(self, sent: Sent, size: int) -> int:
        """Count a frame handed on; returns the bytes it adds (0 once written)."""
        if sent.done:
            return 0
        self.frames.append((sent, size))
        self.bytes += size
        return size

    def settle(self) -> int:
        """Forget the frames written since (ZeroMQ writes a peer's frames in order); returns
        the bytes that freed."""
        freed = 0
        while self.frames and self.frames[0][0].done:
            freed += self.frames.popleft()[1]
        self.bytes -= freed
        return freed


class RecentSet(Generic[K]):
    """Members added less than `window_s` ago, at most `limit` of them (oldest go first)."""

    def __init__(self, window_s: float, limit: int) -> None:
        self.window_s = window_s
        self.limit = limit
        self._added: OrderedDict[K, float] = OrderedDict()

    def add(self, item: K, now: float) -> None:
        self._added.pop(item, None)
        self._added[item] = now
        while len(self._added) > self.limit:
            self._added.popitem(last=False)

    def recent(self, item: K, now: float) -> bool:
        added = self._added.get(item)
        return added is not None and now - added < self.window_s


@dataclass(eq=False)
class Link:
    """One connection: outbound (our DEALER to `address`) or inbound (a routing id on our
    ROUTER). It belongs to a peer once a valid hello arrived on it."""

    direction: str
    send: Sender
    bucket: TokenBucket
    score: BanScore
    address: tuple[str, int] | None = None
    """Where we dialled (outbound)."""
    routing_id: bytes | None = None
    remote_ip: str | None = None
    peer_key: bytes | None = None
    chain: ChainInfo | None = None
    listen: tuple[str, int] | None = None
    """Where the peer accepts connections, from its hello."""
    opened: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    last_bye: float = 0.0
    closed: bool = False
    syncing: bool = False
    """We are fetching this peer's chain, batch after batch."""
    sync_asked: float | None = None
    """When our unanswered getblocks went out."""
    sync_last: bytes | None = None
    """The last block of the previous batch (the next batch starts after it)."""
    synced_to: bytes | None = None
    """The peer's tip when our last sync from it ended (not retried until it moves)."""
    pending_inv: dict[ItemKind, list[bytes]] = field(default_factory=dict)
    known: BoundedSet[tuple[ItemKind, bytes]] = field(
        default_factory=lambda: BoundedSet(KNOWN_ITEMS_PER_LINK)
    )
    """Items this peer has (it announced or sent them, or we did): never announced to it."""
    challenge: bytes = field(default_factory=lambda: os.urandom(CHALLENGE_SIZE))
    """Our fresh nonce for this link: the peer is admitted once its hello signs it."""
    answered: bytes | None = None
    """The peer's challenge we last answered on this link."""
    outbound: OutboundBytes = field(default_factory=OutboundBytes)
    served: RecentSet[tuple[ItemKind, bytes]] = field(
        default_factory=lambda: RecentSet(SERVE_AGAIN_AFTER_S, 1024)
    )
    """Items we sent this peer lately: a getdata for one of them again is not answered (the
    last 1 024: about 200 KB a link)."""

    @property
    def ready(self) -> bool:
        """The peer said a hello on this link that answered our challenge."""
        return self.peer_key is not None and not self.closed

    @property
    def label(self) -> str:
        if self.peer_key is not None:
            return self.peer_key.hex()[:16]
        if self.address is not None:
            return f"{self.address[0]}:{self.address[1]}"
        return f"inbound {self.remote_ip or '?'}"


@dataclass(frozen=True)
class PeerInfo:
    node_key: str
    """The peer's ed25519 public key, hex."""
    address: str
    """host:port where the peer listens."""
    direction: str
    """Whether we dialled it ("out") or it dialled us ("in")."""
    ban_score: float
    last_seen_s: float
    """Seconds since its last valid message."""
    height: int
    total_work: int


class BanList:
    """Subjects (node keys, addresses, routing ids) refused until their ban runs out."""

    def __init__(self, seconds: float, limit: int = 65_536) -> None:
        self.seconds = seconds
        self.limit = limit
        self._until: dict[object, float] = {}

    def ban(self, *subjects: object) -> None:
        until = time.monotonic() + self.seconds
        for subject in subjects:
            if subject is not None:
                if len(self._until) >= self.limit:
                    self.purge()
                if len(self._until) < self.limit:
                    self._until[subject] = until

    def banned(self, subject: object) -> bool:
        until = self._until.get(subject)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[subject]
            return False
        return True

    def purge(self) -> None:
        now = time.monotonic()
        for subject in [s for s, until in self._until.items() if until < now]:
            del self._until[subject]


UNSPECIFIED_HOSTS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


@dataclass
class AddressEntry:
    failures: int = 0
    next_try: float = 0.0
    bootstrap: bool = False


class AddressBook:
    """Listen addresses we could dial: bootstrap peers (kept for ever) and those learnt from
    peer exchange (bounded; dropped after repeated failures). Failed dials back off
    exponentially up to `max_backoff_s`."""

    def __init__(self, limit: int = 1024, max_backoff_s: float = 30.0, max_failures: int = 6):
        self.limit = limit
        self.max_backoff_s = max_backoff_s
        self.max_failures = max_failures
        self._entries: dict[tuple[str, int], AddressEntry] = {}
        self._never: set[tuple[str, int]] = set()
        """Addresses that turned out to be ourselves."""

    def add(self, address: tuple[str, int], *, bootstrap: bool = False) -> None:
        if address in self._never or address[1] == 0 or address[0] in UNSPECIFIED_HOSTS:
            return
        entry = self._entries.get(address)
        if entry is not None:
            entry.bootstrap = entry.bootstrap or bootstrap
            return
        if len(self._entries) >= self.limit and not bootstrap:
            victims = [a for a, e in self._entries.items() if not e.bootstrap]
            if not victims:
                return
            del self._entries[random.choice(victims)]
        self._entries[address] = AddressEntry(bootstrap=bootstrap)

    def never(self, address: tuple[str, int]) -> None:
        """Never dial `address` again (it is us)."""
        self._never.add(address)
        self._entries.pop(address, None)

    def succeeded(self, address: tuple[str, int]) -> None:
        entry = self._entries.get(address)
        if entry is not None:
            entry.failures = 0
            entry.next_try = 0.0

    def failed(self, address: tuple[str, int], now: float | None = None) -> None:
        entry = self._entries.get(address)
        if entry is None:
            return
        entry.failures += 1
        if entry.failures > self.max_failures and not entry.bootstrap:
            del self._entries[address]
            return
        now = time.monotonic() if now is None else now
        delay = min(self.max_backoff_s, 2.0 ** (entry.failures - 1))
        entry.next_try = now + delay * random.uniform(0.8, 1.2)

    def defer(self, address: tuple[str, int], seconds: float) -> None:
        """Do not dial `address` for a while (it is full)."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.next_try = time.monotonic() + seconds

    def due(self, now: float | None = None) -> list[tuple[str, int]]:
        """Addresses whose backoff has run out, bootstrap peers first, the rest shuffled."""
        now = time.monotonic() if now is None else now
        ready = [(a, e) for a, e in self._entries.items() if e.next_try <= now]
        random.shuffle(ready)
        ready.sort(key=lambda pair: not pair[1].bootstrap)
        return [address for address, _ in ready]

    def sample(self, count: int, exclude: Iterable[tuple[str, int]] = ()) -> list[tuple[str, int]]:
        excluded = set(exclude)
        good = [a for a, e in self._entries.items() if e.failures == 0 and a not in excluded]
        random.shuffle(good)
        return good[:count]

    def is_bootstrap(self, address: tuple[str, int]) -> bool:
        entry = self._entries.get(address)
        return entry is not None and entry.bootstrap

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
