"""What a node tells its peers: each item it announces or accepts is kept here by kind (the
most recent RECENT_ITEMS of each, at most RECENT_ITEM_BYTES_PER_KIND of their bytes, oldest
forgotten first), so that it can answer a peer's getdata, and published through the network
once the node runs. Blocks are not kept here: the chain store has them."""

from __future__ import annotations

from collections import OrderedDict

from pouw.budgets import RECENT_ITEM_BYTES_PER_KIND
from pouw.network import Network
from pouw.network.messages import ItemKind
from pouw.node.context import Background

RECENT_ITEMS = 4096


class RecentItems:
    """Payloads by id, bounded by count and bytes; the oldest go first."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self._payloads: OrderedDict[bytes, bytes] = OrderedDict()

    def put(self, item_id: bytes, payload: bytes) -> None:
        self.pop(item_id)
        if len(payload) > self.max_bytes:
            return
        self._payloads[item_id] = payload
        self.bytes += len(payload)
        while len(self._payloads) > self.max_items or self.bytes > self.max_bytes:
            _, oldest = self._payloads.popitem(last=False)
            self.bytes -= len(oldest)

    def pop(self, item_id: bytes) -> None:
        payload = self._payloads.pop(item_id, None)
        if payload is not None:
            self.bytes -= len(payload)

    def get(self, item_id: bytes) -> bytes | None:
        return self._payloads.get(item_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._payloads


class Announcer:
    def __init__(self, background: Background) -> None:
        self.background = background
        self.network: Network | None = None
        """Set while the node runs."""
        self._items: dict[ItemKind, RecentItems] = {
            kind: RecentItems(RECENT_ITEMS, RECENT_ITEM_BYTES_PER_KIND) for kind in ItemKind
        }

    def announce(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        """Keep the item and announce it to every peer."""
        self.remember(kind, item_id, payload)
        if self.network is not None:
            self.background.spawn(self.network.publish(kind, item_id, payload))

    def remember(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        if kind != ItemKind.BLOCK:
            self._items[kind].put(item_id, payload)

    def knows(self, kind: ItemKind, item_id: bytes) -> bool:
        return item_id in self._items[kind]

    def payload(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        return self._items[kind].get(item_id)

    def kept_bytes(self) -> int:
        """Payload bytes held, all kinds."""
        return sum(items.bytes for items in self._items.values())
