"""The link table: our DEALERs to outbound peers and the routing ids on our ROUTER, the peer
each belongs to once it said hello, bans and the address book."""

from __future__ import annotations

from collections.abc import Callable

import zmq
import zmq.asyncio

from pouw.network.peers import AddressBook, BanList, BanScore, Link, Sent, TokenBucket
from pouw.network.transport import Transport, send_now


class LinkTable:
    def __init__(
        self,
        transport: Transport,
        *,
        rate_per_s: float,
        burst: int,
        ban_seconds: float,
        ban_decay_per_s: float,
        max_pending_inbound: int,
        max_backoff_s: float,
    ) -> None:
        self.transport = transport
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.ban_decay_per_s = ban_decay_per_s
        self.max_pending_inbound = max_pending_inbound
        self.router: zmq.asyncio.Socket | None = None
        self.inbound: dict[bytes, Link] = {}
        self.outbound: dict[tuple[str, int], Link] = {}
        self.dealers: dict[tuple[str, int], zmq.asyncio.Socket] = {}
        self.bans = BanList(ban_seconds)
        self.book = AddressBook(max_backoff_s=max_backoff_s)

    def _new_link(self, direction: str, send: Callable[[bytes], Sent | None]) -> Link:
        return Link(
            direction,
            send,
            TokenBucket(self.rate_per_s, self.burst),
            BanScore(self.ban_decay_per_s),
        )

    def links(self) -> list[Link]:
        return [*self.outbound.values(), *self.inbound.values()]

    def peer_links(self) -> dict[bytes, Link]:
        """One ready link per peer key, our outbound one preferred."""
        chosen: dict[bytes, Link] = {}
        for link in self.links():
            if link.ready and link.peer_key is not None:
                current = chosen.get(link.peer_key)
                if current is None or (current.direction == "in" and link.direction == "out"):
                    chosen[link.peer_key] = link
        return chosen

    def peer_count(self) -> int:
        return len({link.peer_key for link in self.links() if link.ready})

    def dialling(self) -> int:
        return sum(1 for link in self.outbound.values() if not link.ready)

    def is_connected_to(self, address: tuple[str, int]) -> bool:
        if address in self.outbound:
            return True
        return any(link.listen == address for link in self.inbound.values() if link.ready)

    def inbound_link(self, routing_id: bytes) -> Link | None:
        """The link of a routing id, opened on its first frame; None when too many inbound
        links have not said hello yet."""
        link = self.inbound.get(routing_id)
        if link is not None:
            return link
        pending = sum(1 for link in self.inbound.values() if not link.ready)
        if pending >= self.max_pending_inbound:
            return None
        router = self.router
        assert router is not None

        def send(frame: bytes) -> Sent | None:
            return send_now(router, [routing_id, frame])

        link = self._new_link("in", send)
        link.routing_id = routing_id
        self.inbound[routing_id] = link
        return link

    def dial(self, address: tuple[str, int]) -> tuple[Link, zmq.asyncio.Socket]:
        dealer = self.transport.connect_dealer(*address)

        def send(frame: bytes) -> Sent | None:
            return send_now(dealer, [frame])

        link = self._new_link("out", send)
        link.address = address
        self.outbound[address] = link
        self.dealers[address] = dealer
        return link, dealer

    def remove(self, link: Link, linger_ms: int = 0) -> None:
        link.closed = True
        if link.direction == "out" and link.address is not None:
            if self.outbound.get(link.address) is link:
                del self.outbound[link.address]
                dealer = self.dealers.pop(link.address, None)
                if dealer is not None:
                    self.transport.close_socket(dealer, linger_ms)
        elif link.routing_id is not None and self.inbound.get(link.routing_id) is link:
            del self.inbound[link.routing_id]

    def ban(self, link: Link) -> None:
        self.bans.ban(link.peer_key, link.address, link.listen, link.routing_id)

    def close_all(self, linger_ms: int) -> None:
        for link in self.links():
            self.remove(link, linger_ms)
        if self.router is not None:
            self.transport.close_socket(self.router, linger_ms)
