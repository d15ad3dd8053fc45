"""The mempool's journal: the transactions a node admitted, so that a restart, or a kill, loses
none that no block has confirmed yet.

Records are length-prefixed encoded transactions, appended as they are admitted. A starting
node replays them through the mempool's admission (what blocks confirmed meanwhile, or made
invalid, is refused and dropped) and `rewrite`s the file with what it kept; a node also
rewrites it from its mempool when it has grown to `compact_after` records, so a flood cannot
grow it without bound. Appends are flushed to the kernel, not fsynced: a killed process loses
nothing; a power cut may lose the last few, which their senders' nodes announce again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

LENGTH_BYTES = 4


class MempoolJournal:
    def __init__(self, path: Path, compact_after: int) -> None:
        self.path = path
        self.compact_after = compact_after
        self.records = 0
        """Records in the file: a rewrite is due when they reach `compact_after`."""
        self._file: BinaryIO | None = None

    def replay(self) -> Iterator[bytes]:
        """The journaled transactions, oldest first; a record torn by a kill mid-write is the
        last one and is left out."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        while offset + LENGTH_BYTES <= len(data):
            end = (
                offset + LENGTH_BYTES + int.from_bytes(data[offset : offset + LENGTH_BYTES], "big")
            )
            if end > len(data):
                return
            yield data[offset + LENGTH_BYTES : end]
            offset = end

    @property
    def full(self) -> bool:
        return self.records >= self.compact_after

    def append(self, encoded: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(_record(encoded))
        self._file.flush()
        self.records += 1

    def rewrite(self, encoded: Iterable[bytes]) -> None:
        """Replace the journal, atomically, with these transactions."""
        self.close()
        temporary = self.path.with_suffix(".tmp")
        records = 0
        with temporary.open("wb") as file:
            for item in encoded:
                file.write(_record(item))
                records += 1
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.path)
        self.records = records

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _record(encoded: bytes) -> bytes:
    return len(encoded).to_bytes(LENGTH_BYTES, "big") + encoded
