"""Peering: the hello handshake (same chain, max_peers, duplicates), goodbyes, peer exchange,
dialling from the address book with backoff, and heartbeats (pings carry our tip, so a peer
that fell behind notices and syncs; silent peers are dropped; bootstrap peers redialled)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable

from pouw.network.core import NetworkCore, log
from pouw.network.drops import DropReason
from pouw.network.messages import (
    MAX_ADDRESSES,
    Address,
    Bye,
    ChainInfo,
    DropMessage,
    GetData,
    Hello,
    Peers,
    Ping,
    Pong,
)
from pouw.network.peers import UNSPECIFIED_HOSTS, Link

FULL_RETRY_S = 30.0
"""How long a dialler leaves a peer that said it is full alone."""


class PeeringMixin(NetworkCore):
    def _dial(self, address: tuple[str, int]) -> None:
        link, dealer = self._links.dial(address)
        self._readers[link] = asyncio.ensure_future(self._read_dealer(link, dealer))
        self._send(link, self._hello())

    # -- fault injection (faults.py) -------------------------------------------------------------

    def cut(self, addresses: Iterable[Address]) -> None:
        """Cut this node off from the peers listening at `addresses` until heal(): their links
        close now and nothing more passes either way. On the network's loop only."""
        self.partition.cut(addresses)
        self._apply_partition(frozenset())

    def heal(self, addresses: Iterable[Address] | None = None) -> None:
        """Undo cut() for `addresses` (default: all) and dial them again at once."""
        before = self.partition.blocked
        self.partition.heal(addresses)
        self._apply_partition(before)

    def _apply_partition(self, before: frozenset[Address]) -> None:
        for link in self._links.links():
            if self.partition.blocks(link):
                self.partition.learn(link.peer_key, link.address)
                self.partition.learn(link.peer_key, link.listen)
                self._close(link)
        for address in before - self.partition.blocked:
            self._links.book.add(address)
            self._links.book.succeeded(address)  # no backoff left from the cut
        self._dial_more()

    def _dial_more(self) -> None:
        """Dial known addresses while below max_peers (a few at a time)."""
        links, settings = self._links, self.settings
        room = min(
            self.max_peers - links.peer_count() - links.dialling(),
            settings.max_dials - links.dialling(),
        )
        if room <= 0:
            return
        own = (self.host, self._port)
        for address in links.book.due():
            if room <= 0:
                break
            if address == own or links.is_connected_to(address) or links.bans.banned(address):
                continue
            if address in self.partition.blocked:
                continue
            self._dial(address)
            room -= 1

    def _hello(self) -> Hello:
        info = self.handler.chain_info()
        return Hello(
            info.chain_id,
            info.genesis_hash,
            info.height,
            info.tip_hash,
            info.total_work,
            self.host,
            self._port,
        )

    def _on_hello(self, link: Link, sender: bytes, hello: Hello) -> None:
        ours = self.handler.chain_info()
        if hello.chain_id != ours.chain_id or hello.genesis_hash != ours.genesis_hash:
            self._send(link, Bye("wrong_chain"))
            self._links.bans.ban(sender)  # its next dial is refused at once
            raise DropMessage(DropReason.WRONG_CHAIN, hello.chain_id)
        if sender == self.key.public_key:  # we dialled ourselves under another address
            if link.address is not None:
                self._links.book.never(link.address)
            self._close(link)
            return
        if link.peer_key is not None and sender != link.peer_key and link.direction == "in":
            raise DropMessage(DropReason.IMPERSONATION)
        listen = (hello.listen_host, hello.listen_port)
        if hello.listen_host in UNSPECIFIED_HOSTS:
            seen_at = link.address[0] if link.address else link.remote_ip
            listen = (seen_at or hello.listen_host, hello.listen_port)
        first = link.peer_key != sender
        link.chain = ChainInfo(
            hello.chain_id, hello.genesis_hash, hello.height, hello.tip_hash, hello.total_work
        )
        if first and not self._admit(link, sender, listen):
            return
        link.peer_key, link.listen = sender, listen
        self._received(link, hello)
        if first:
            if link.address is not None:
                self._links.book.succeeded(link.address)
            self._links.book.add(listen)
            if link.direction == "in":
                self._send(link, self._hello())
            self._send(link, Peers(self._addresses(exclude=listen)))
            self._update_gauge()
        if hello.total_work > ours.total_work:
            self._start_sync(link)

    def _admit(self, link: Link, sender: bytes, listen: Address) -> bool:
        """Whether a new peer may have this link (max_peers, duplicates)."""
        existing = self._links.peer_links().get(sender)
        if existing is None and self.peer_count() >= self.max_peers:
            self._send(link, Bye("full", self._addresses(exclude=listen)))
            self._close(link)
            self._links.book.add(listen)  # for the next node we turn away
            return False
        if existing is not None and existing.direction == link.direction:
            if link.direction == "out":  # the same node under a second address
                if link.address is not None:
                    self._links.book.defer(link.address, 10 * self.settings.max_backoff_s)
                self._close(link)
                return False
            self._close(existing)  # it reconnected: its old connection is dead
        return True

    def _on_bye(self, link: Link, bye: Bye) -> None:
        self._learn(bye.addresses)
        if bye.reason == "hello_first":
            if link.direction == "out" and link.ready:
                self._send(link, self._hello())  # it restarted and forgot us
            return
        if bye.reason == "full" and link.address is not None:
            self._links.book.defer(link.address, FULL_RETRY_S)
        self._close(link, failed=bye.reason not in ("full", "shutdown"))
        self._dial_more()

    def _addresses(self, exclude: Address | None = None) -> list[Address]:
        known = [
            link.listen
            for link in self._links.peer_links().values()
            if link.listen is not None and link.listen != exclude
        ]
        room = MAX_ADDRESSES // 2 - len(known)
        if room > 0:
            known += self._links.book.sample(room, exclude=[*known, exclude] if exclude else known)
        return known[: MAX_ADDRESSES // 2]

    def _learn(self, addresses: list[Address]) -> None:
        own = (self.host, self._port)
        for address in addresses:
            if address != own:
                self._links.book.add(address)
        self._dial_more()

    def _note_tip(self, link: Link, status: Ping | Pong) -> None:
        chain = link.chain
        if chain is None:
            return
        link.chain = ChainInfo(
            chain.chain_id, chain.genesis_hash, status.height, status.tip_hash, status.total_work
        )
        if (
            status.total_work > self.handler.chain_info().total_work
            and status.tip_hash != link.synced_to
        ):
            self._start_sync(link)

    async def _heartbeat(self) -> None:
        last = time.monotonic()
        while self._running:
            await asyncio.sleep(self.settings.heartbeat_s)
            now = time.monotonic()
            # A tick that comes late means the loop was busy (a long import): frames from
            # peers may be waiting unread, so nobody is timed out on this one.
            late = now - last > 2 * self.settings.heartbeat_s
            last = now
            try:
                self._tick(timeouts=not late)
            except Exception:
                log.exception("network heartbeat failed")

    def _tick(self, *, timeouts: bool = True) -> None:
        settings, now = self.settings, time.monotonic()
        before = self.partition.blocked
        if self.partition.reload((self.host, self._port)):
            self._apply_partition(before)
        info = self.handler.chain_info()
        ping = Ping(random.getrandbits(62), info.height, info.tip_hash, info.total_work)
        exchange = now - self._last_exchange >= settings.exchange_s
        if exchange:
            self._last_exchange = now
        for link in self._links.links():
            if link.ready:
                if timeouts and now - link.last_seen > settings.peer_timeout_s:
                    log.info("peer %s timed out", link.label)
                    self._close(link, failed=True)
                    continue
            elif timeouts and now - link.opened > settings.peer_timeout_s:
                self._close(link, failed=True)
                continue
            if link.sync_asked is not None and now - link.sync_asked > settings.request_timeout_s:
                self._end_sync(link)
        for link in self._links.peer_links().values():  # each side pings on its preferred link
            self._send(link, ping)
            if exchange:
                self._send(link, Peers(self._addresses(exclude=link.listen)))
        for (kind, item_id), link in self._relay.retry(now, settings.request_timeout_s):
            self._send(link, GetData(kind, [item_id]))
        self._links.bans.purge()
        self._dial_more()
        self._update_gauge()
