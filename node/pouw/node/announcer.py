"""What a node tells its peers: each item it announces or accepts is kept here by kind (the
most recent RECENT_ITEMS of each), so that it can answer a peer's getdata, and published
through the network once the node runs. Blocks are not kept here: the chain store has them."""

from __future__ import annotations

from cachetools import FIFOCache

from pouw.network import Network
from pouw.network.messages import ItemKind
from pouw.node.context import Background

RECENT_ITEMS = 4096


class Announcer:
    def __init__(self, background: Background) -> None:
        self.background = background
        self.network: Network | None = None
        """Set while the node runs."""
        self._items: dict[ItemKind, FIFOCache[bytes, bytes]] = {
            kind: FIFOCache(RECENT_ITEMS) for kind in ItemKind
        }

    def announce(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        """Keep the item and announce it to every peer."""
        self.remember(kind, item_id, payload)
        if self.network is not None:
            self.background.spawn(self.network.publish(kind, item_id, payload))

    def remember(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        if kind != ItemKind.BLOCK:
            self._items[kind][item_id] = payload

    def knows(self, kind: ItemKind, item_id: bytes) -> bool:
        return item_id in self._items[kind]

    def payload(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        return self._items[kind].get(item_id)
