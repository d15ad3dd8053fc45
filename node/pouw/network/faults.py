"""Fault injection for tests: a partition that cuts this node off from some peers.

Off by default: with nothing cut, the network checks one empty set per frame. While a peer's
listen address is cut, the node sends it nothing, drops whatever it sends (counted as
pouw_messages_dropped_total{reason="partitioned"}, never scored against it) and does not dial
it, as if the wire between the two were gone. Cutting closes the links at once, without a
goodbye (a real cut would close them after peer_timeout_s of silence); healing makes the
peers dialable again straight away instead of after their redial backoff, so a test waits
for the chains to converge, not for timers.

Two ways in:
- in one process: `node.network.cut([(host, port), ...])`, later `node.network.heal()`;
- across processes: POUW_FAULT_PARTITION_FILE (or NetworkSettings.partition_file) names one
  file that every node of the network reads. Each line is one side of the split: the
  listen addresses (`host:port`, as the nodes advertise them) of the nodes on that side,
  separated by spaces. A node listed on one line is cut from every address on the other
  lines; a node on no line, or with no file, is cut from nobody (blank lines and `#`
  comments are ignored). Every heartbeat re-reads the file when it changed, so a test
  splits a multi-process network by writing it and heals it by emptying or removing it.
  The file, when there is one, is the whole cut.

Both sides of a split should cut each other: a one-sided cut isolates the pair too, but the
other side notices only when its links time out.

Why not `ip netns` hosts joined by veth pairs and split with `ip link set down`: that needs
root (CAP_NET_ADMIN) on the test machine, one process per namespace (so no in-process
nodes) and teardown after crashes, and it leaks namespaces when a CI job is killed; this
option needs nothing and splits in-process and multi-process networks alike. What it does
not exercise is the kernel's view of a cut (half-open TCP, retransmissions): ZeroMQ
reconnects on its own either way, and liveness is judged by the heartbeats, which both see.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pouw.network.messages import Address
from pouw.network.peers import Link

PARTITION_FILE_ENV = "POUW_FAULT_PARTITION_FILE"

log = logging.getLogger("pouw.network")


class Partition:
    """The listen addresses (and, once seen, node keys) this node is cut off from."""

    def __init__(self, blocked: Iterable[Address] = (), *, path: Path | None = None) -> None:
        self._blocked: frozenset[Address] = frozenset(blocked)
        self._keys: dict[bytes, Address] = {}
        """Node keys of cut peers, so that their frames are dropped on any link (a straggler
        arriving on a fresh routing id says no address until its hello)."""
        self.path = path
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def from_environment(cls) -> Partition:
        """Watching POUW_FAULT_PARTITION_FILE when it is set, else cutting nothing."""
        raw = os.environ.get(PARTITION_FILE_ENV, "").strip()
        return cls(path=Path(raw) if raw else None)

    @property
    def blocked(self) -> frozenset[Address]:
        return self._blocked

    def __bool__(self) -> bool:
        return bool(self._blocked)

    def cut(self, addresses: Iterable[Address]) -> None:
        """Add `addresses` to the cut (the network's cut() also closes their links)."""
        self._blocked |= {(host, int(port)) for host, port in addresses}

    def heal(self, addresses: Iterable[Address] | None = None) -> None:
        """Take the given addresses, or all, out of the cut."""
        if addresses is None:
            self._blocked = frozenset()
        else:
            self._blocked -= {(host, int(port)) for host, port in addresses}
        self._forget_healed()

    def blocks(self, link: Link) -> bool:
        """Whether traffic on `link` is cut: its dialled address, its peer's listen address or
        its peer's key."""
        if not self._blocked:
            return False
        if link.address in self._blocked or link.listen in self._blocked:
            return True
        return link.peer_key is not None and link.peer_key in self._keys

    def blocks_sender(self, key: bytes) -> bool:
        return key in self._keys

    def learn(self, key: bytes | None, address: Address | None) -> None:
        """`key` is the node listening at `address`, which is cut."""
        if key is not None and address in self._blocked:
            assert address is not None
            self._keys[key] = address

    def _forget_healed(self) -> None:
        self._keys = {k: a for k, a in self._keys.items() if a in self._blocked}

    def reload(self, own: Address) -> bool:
        """Re-read the partition file if it changed since the last read and cut this node
        (listening at `own`) from the other sides; True when the cut changed. A file that
        cannot be parsed leaves the cut as it was (and says why)."""
        if self.path is None:
            return False
        try:
            status = self.path.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            text = "" if stamp is None else self.path.read_text(encoding="utf-8")
            blocked = cut_from(parse_sides(text), own)
        except (OSError, ValueError) as error:
            log.warning("partition file %s ignored: %s", self.path, error)
            return False
        changed = blocked != self._blocked
        self._blocked = blocked
        self._forget_healed()
        return changed


def parse_sides(text: str) -> list[list[Address]]:
    """The sides of a partition file: one line each, `host:port` ([v6]:port) entries."""
    sides = []
    for number, line in enumerate(text.splitlines(), start=1):
        side = []
        for entry in line.split("#", 1)[0].split():
            host, separator, port = entry.rpartition(":")
            if not separator or not host.strip("[]") or not port.isdigit():
                raise ValueError(f"line {number}: {entry!r} is not host:port")
            side.append((host.strip("[]"), int(port)))
        if side:
            sides.append(side)
    return sides


def cut_from(sides: list[list[Address]], own: Address) -> frozenset[Address]:
    """The addresses a node listening at `own` is cut from: those of the other sides."""
    if not any(own in side for side in sides):
        return frozenset()
    return frozenset(address for side in sides if own not in side for address in side)


def format_sides(sides: Iterable[Iterable[Address]]) -> str:
    """A partition file's text: one line per side."""
    return "".join(
        " ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in side)
        + "\n"
        for side in sides
    )
