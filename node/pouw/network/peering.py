"""Peering: the hello handshake (same chain, each side signs the other's challenge for this
link, max_peers, duplicates), goodbyes, peer exchange,
dialling from the address book with backoff, heartbeats (pings carry our tip, so a peer that
fell behind notices and syncs; silent peers are dropped; bootstrap peers redialled), and
cutting and healing the partition (faults.py)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence

from pouw.network.drops import DropReason
from pouw.network.faults import Partition
from pouw.network.messages import (
    MAX_ADDRESSES,
    Address,
    Bye,
    ChainInfo,
    DropMessage,
    Hello,
    Peers,
    Ping,
    Pong,
    answer_challenge,
    answers_challenge,
)
from pouw.network.peers import UNSPECIFIED_HOSTS, Link, PeerInfo, format_address
from pouw.network.settings import NetworkSettings
from pouw.network.wire import Wire

log = logging.getLogger("pouw.network")

FULL_RETRY_S = 30.0
"""How long a dialler leaves a peer that said it is full alone."""


class Peering:
    def __init__(
        self,
        wire: Wire,
        partition: Partition,
        chain_info: Callable[[], ChainInfo],
        settings: NetworkSettings,
        *,
        max_peers: int,
        start_sync: Callable[[Link], None],
    ) -> None:
        """`chain_info` tells our chain and tip; `start_sync` is called with a peer that has
        more work than we do."""
        self._wire = wire
        self._links = wire.links
        self._partition = partition
        self._chain_info = chain_info
        self._settings = settings
        self._max_peers = max_peers
        self._start_sync = start_sync
        self._last_exchange = 0.0

    def start(self, bootstrap_peers: Sequence[Address]) -> None:
        for address in bootstrap_peers:
            self._links.book.add(address, bootstrap=True)
        self.dial_more()

    def stop(self) -> None:
        """Say goodbye to every peer."""
        for link in self._links.links():
            if link.ready:
                self._wire.send(link, Bye("shutdown"))

    def peers(self) -> list[PeerInfo]:
        now = time.monotonic()
        return [
            PeerInfo(
                node_key=key.hex(),
                address=format_address(link.listen) if link.listen else "",
                direction=link.direction,
                ban_score=round(link.score.current(now), 2),
                last_seen_s=round(now - link.last_seen, 3),
                height=link.chain.height if link.chain else 0,
                total_work=link.chain.total_work if link.chain else 0,
            )
            for key, link in self._links.peer_links().items()
        ]

    # -- the partition ---------------------------------------------------------------------------

    def cut(self, addresses: Iterable[Address]) -> None:
        """Cut this node off from the peers listening at `addresses` until heal(): their links
        close now and nothing more passes either way."""
        self._partition.cut(addresses)
        self._apply_partition(frozenset())

    def heal(self, addresses: Iterable[Address] | None = None) -> None:
        """Undo cut() for `addresses` (default: all) and dial them again at once."""
        before = self._partition.blocked
        self._partition.heal(addresses)
        self._apply_partition(before)

    def _apply_partition(self, before: frozenset[Address]) -> None:
        for link in self._links.links():
            if self._partition.blocks(link):
                self._partition.learn(link.peer_key, link.address)
                self._partition.learn(link.peer_key, link.listen)
                self._wire.disconnect(link)
        for address in before - self._partition.blocked:
            self._links.book.add(address)
            self._links.book.succeeded(address)  # no backoff left from the cut
        self.dial_more()

    # -- dialling --------------------------------------------------------------------------------

    def dial_more(self) -> None:
        """Dial known addresses while below max_peers (a few at a time)."""
        links = self._links
        room = min(
            self._max_peers - links.peer_count() - links.dialling(),
            self._settings.max_dials - links.dialling(),
        )
        if room <= 0:
            return
        own = (self._wire.host, self._wire.port)
        for address in links.book.due():
            if room <= 0:
                break
            if address == own or links.is_connected_to(address) or links.bans.banned(address):
                continue
            if address in self._partition.blocked:
                continue
            link = self._wire.dial(address)
            self._wire.send(link, self._hello(link))
            room -= 1

    def _hello(self, link: Link, answer_to: tuple[bytes, bytes] | None = None) -> Hello:
        """Our hello on `link`, with its challenge and, given the peer's (challenge, key), our
        answer to it."""
        info = self._chain_info()
        answer = b""
        if answer_to is not None:
            answer = answer_challenge(self._wire.key, info.chain_id, *answer_to)
        return Hello(
            info.chain_id,
            info.genesis_hash,
            info.height,
            info.tip_hash,
            info.total_work,
            self._wire.host,
            self._wire.port,
            link.challenge,
            answer,
        )

    # -- hello and goodbye -----------------------------------------------------------------------

    def on_hello(self, link: Link, sender: bytes, hello: Hello) -> None:
        ours = self._chain_info()
        if hello.chain_id != ours.chain_id or hello.genesis_hash != ours.genesis_hash:
            self._wire.send(link, Bye("wrong_chain"))
            self._links.bans.ban(sender)  # its next dial is refused at once
            raise DropMessage(DropReason.WRONG_CHAIN, hello.chain_id)
        if sender == self._wire.key.public_key:  # we dialled ourselves under another address
            if link.address is not None:
                self._links.book.never(link.address)
            self._wire.disconnect(link)
            return
        if link.peer_key is not None and sender != link.peer_key and link.direction == "in":
            raise DropMessage(DropReason.IMPERSONATION)
        listen = (hello.listen_host, hello.listen_port)
        if hello.listen_host in UNSPECIFIED_HOSTS:
            seen_at = link.address[0] if link.address else link.remote_ip
            listen = (seen_at or hello.listen_host, hello.listen_port)
        first = link.peer_key != sender
        if first and not self._has_room(link, sender, listen):
            return  # said before we answer: a dialler never counts a full node as its peer
        proven = self._proves_link(link, sender, hello)
        if hello.challenge != link.answered:
            link.answered = hello.challenge
            self._wire.send(link, self._hello(link, (hello.challenge, sender)))
        if not proven:
            return  # admitted once its next hello answers our challenge
        link.chain = ChainInfo(
            hello.chain_id, hello.genesis_hash, hello.height, hello.tip_hash, hello.total_work
        )
        if first and not self._admit(link, sender, listen):
            return
        link.peer_key, link.listen = sender, listen
        self._wire.received(link, hello)
        if first:
            if link.address is not None:
                self._links.book.succeeded(link.address)
            self._links.book.add(listen)
            self._wire.send(link, Peers(self._addresses(exclude=listen)))
            self._wire.update_gauge()
        if hello.total_work > ours.total_work:
            self._start_sync(link)

    def _proves_link(self, link: Link, sender: bytes, hello: Hello) -> bool:
        """Whether the hello answers the challenge we sent on this link, signed for us by its
        sender; an answer that does not is a hello replayed or relayed from elsewhere."""
        if not hello.answer:
            return False
        ours = self._wire.key.public_key
        if not answers_challenge(self._wire.chain_id, sender, hello.answer, link.challenge, ours):
            raise DropMessage(DropReason.BAD_HANDSHAKE)
        return True

    def _has_room(self, link: Link, sender: bytes, listen: Address) -> bool:
        """Whether we have room for the sender (max_peers), else tell it we are full."""
        if sender in self._links.peer_links() or self._links.peer_count() < self._max_peers:
            return True
        self._wire.send(link, Bye("full", self._addresses(exclude=listen)))
        self._wire.disconnect(link)
        self._links.book.add(listen)  # for the next node we turn away
        return False

    def _admit(self, link: Link, sender: bytes, listen: Address) -> bool:
        """Whether a new peer, proven on this link, may have it (max_peers, duplicates)."""
        if not self._has_room(link, sender, listen):
            return False
        existing = self._links.peer_links().get(sender)
        if existing is not None and existing.direction == link.direction:
            if link.direction == "out":  # the same node under a second address
                if link.address is not None:
                    self._links.book.defer(link.address, 10 * self._settings.max_backoff_s)
                self._wire.disconnect(link)
                return False
            self._wire.disconnect(existing)  # it reconnected: its old connection is dead
        return True

    def on_bye(self, link: Link, bye: Bye) -> None:
        self._learn(bye.addresses)
        if bye.reason == "hello_first":
            if link.direction == "out" and link.ready:
                self._wire.send(link, self._hello(link))  # it restarted and forgot us
            return
        if bye.reason == "full" and link.address is not None:
            self._links.book.defer(link.address, FULL_RETRY_S)
        self._wire.disconnect(link, failed=bye.reason not in ("full", "shutdown"))
        self.dial_more()

    # -- peer exchange and heartbeats ------------------------------------------------------------

    def on_peers(self, peers: Peers) -> None:
        self._learn(peers.addresses)

    def _learn(self, addresses: list[Address]) -> None:
        own = (self._wire.host, self._wire.port)
        for address in addresses:
            if address != own:
                self._links.book.add(address)
        self.dial_more()

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

    def on_ping(self, link: Link, ping: Ping) -> None:
        self._note_tip(link, ping)
        info = self._chain_info()
        self._wire.send(link, Pong(ping.nonce, info.height, info.tip_hash, info.total_work))

    def on_pong(self, link: Link, pong: Pong) -> None:
        self._note_tip(link, pong)

    def _note_tip(self, link: Link, status: Ping | Pong) -> None:
        """A ping or pong tells the peer's tip: sync when it has more work than we do."""
        chain = link.chain
        if chain is None:
            return
        link.chain = ChainInfo(
            chain.chain_id, chain.genesis_hash, status.height, status.tip_hash, status.total_work
        )
        if status.total_work > self._chain_info().total_work and status.tip_hash != link.synced_to:
            self._start_sync(link)

    def tick(self, now: float, *, timeouts: bool = True) -> None:
        """A heartbeat: re-read the partition file, drop silent peers and unanswered dials
        (unless `timeouts` is off), ping every peer, exchange addresses now and then, and dial
        more."""
        settings = self._settings
        before = self._partition.blocked
        if self._partition.reload((self._wire.host, self._wire.port)):
            self._apply_partition(before)
        info = self._chain_info()
        ping = Ping(random.getrandbits(62), info.height, info.tip_hash, info.total_work)
        exchange = now - self._last_exchange >= settings.exchange_s
        if exchange:
            self._last_exchange = now
        if timeouts:
            for link in self._links.links():
                if link.ready and now - link.last_seen > settings.peer_timeout_s:
                    log.info("peer %s timed out", link.label)
                    self._wire.disconnect(link, failed=True)
                elif not link.ready and now - link.opened > settings.peer_timeout_s:
                    self._wire.disconnect(link, failed=True)
        for link in self._links.peer_links().values():  # each side pings on its preferred link
            self._wire.send(link, ping)
            if exchange:
                self._wire.send(link, Peers(self._addresses(exclude=link.listen)))
        self._links.bans.purge()
        self.dial_more()
        self._wire.update_gauge()
