"""The chain on disk: SQLite in WAL mode with synchronous=FULL.

A block, the main-chain pointers it moves and the state rows it changes are written in one
SQLite transaction, so a crash at any moment leaves either the old or the new chain, whole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import msgspec

from pouw.blockchain.block import Block, BlockHeader, decode_block
from pouw.blockchain.draw import Ticket
from pouw.blockchain.params import ChainParams
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.state import Account, Position, StateChanges, StateTables
from pouw.crypto import canonical_bytes

STORE_FILE: Final = "chain.sqlite"
SCHEMA_VERSION: Final = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    total_work TEXT NOT NULL,
    header BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS main_chain (height INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, changes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (address TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (id BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (id BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS positions (id BLOB PRIMARY KEY, data BLOB NOT NULL);
"""

_undo_encoder = msgspec.msgpack.Encoder()
"""Undo records are never hashed, so they need no canonical form (and have bytes keys)."""
_header_decoder = msgspec.msgpack.Decoder(BlockHeader)
_params_decoder = msgspec.msgpack.Decoder(ChainParams)
_changes_decoder = msgspec.msgpack.Decoder(StateChanges)
_account_decoder = msgspec.msgpack.Decoder(Account)
_ticket_decoder = msgspec.msgpack.Decoder(Ticket)
_task_decoder = msgspec.msgpack.Decoder(TaskRecord)
_position_decoder = msgspec.msgpack.Decoder(Position)


class StoredBlock(msgspec.Struct, frozen=True):
    hash: bytes
    header: BlockHeader
    total_work: int


class ChainStore:
    """Not thread-safe: one owner at a time (the node's loop, or a miner's pipeline)."""

    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(data_dir) / STORE_FILE
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no chain store at {self.path}")
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA synchronous=FULL")
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self, *, commit_on_error: bool = False) -> Iterator[None]:
        """All-or-nothing writes. Nested inside another transaction it is a savepoint: its
        writes go or stay with the outer one's commit. `commit_on_error` keeps what earlier
        nested transactions wrote when an exception ends the outer one (see Chain.batch)."""
        if self._depth:
            savepoint = f"nested_{self._depth}"
            self._db.execute(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._db.execute(f"ROLLBACK TO {savepoint}")
                raise
            finally:
                self._depth -= 1
                self._db.execute(f"RELEASE {savepoint}")
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("COMMIT" if commit_on_error else "ROLLBACK")
            raise
        finally:
            self._depth = 0
        self._db.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------

    def params(self) -> ChainParams | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'params'").fetchone()
        return None if row is None else _params_decoder.decode(row[0])

    def write_params(self, params: ChainParams) -> None:
        self._put_meta("params", canonical_bytes(params))
        self._put_meta("schema_version", str(SCHEMA_VERSION).encode())

    def tip_hash(self) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'tip'").fetchone()
        return None if row is None else bytes(row[0])

    def write_tip(self, block_hash: bytes) -> None:
        self._put_meta("tip", block_hash)

    def _put_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- blocks ------------------------------------------------------------------------------

    def put_block(self, block: Block, block_hash: bytes, total_work: int, encoded: bytes) -> None:
        header = block.header
        self._db.execute(
            "INSERT OR IGNORE INTO blocks (hash, height, prev_hash, total_work, header, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                block_hash,
                header.height,
                header.prev_hash,
                str(total_work),
                canonical_bytes(header),
                encoded,
            ),
        )

    def delete_block(self, block_hash: bytes) -> None:
        self._db.execute("DELETE FROM blocks WHERE hash = ?", (block_hash,))
        self._db.execute("DELETE FROM undo WHERE hash = ?", (block_hash,))

    def block(self, block_hash: bytes) -> Block | None:
        row = self._db.execute("SELECT body FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else decode_block(row[0])

    def block_bytes(self, block_hash: bytes) -> bytes | None:
        row = self._db.execute("SELECT body FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def stored_blocks(self) -> Iterator[StoredBlock]:
        """Every stored block's header, parents before children."""
        rows = self._db.execute("SELECT hash, header, total_work FROM blocks ORDER BY height")
        for block_hash, header, total_work in rows:
            yield StoredBlock(bytes(block_hash), _header_decoder.decode(header), int(total_work))

    # -- main chain --------------------------------------------------------------------------

    def set_main(self, height: int, block_hash: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO main_chain (height, hash) VALUES (?, ?)", (height, block_hash)
        )

    def truncate_main(self, above_height: int) -> None:
        self._db.execute("DELETE FROM main_chain WHERE height > ?", (above_height,))

    def main_chain(self) -> list[bytes]:
        rows = self._db.execute("SELECT height, hash FROM main_chain ORDER BY height").fetchall()
        for expected, (height, _) in enumerate(rows):
            if height != expected:
                raise ValueError(f"main chain has a gap at height {expected}")
        return [bytes(block_hash) for _, block_hash in rows]

    # -- state -------------------------------------------------------------------------------

    def put_undo(self, block_hash: bytes, changes: StateChanges) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO undo (hash, changes) VALUES (?, ?)",
            (block_hash, _undo_encoder.encode(changes)),
        )

    def undo(self, block_hash: bytes) -> StateChanges:
        row = self._db.execute("SELECT changes FROM undo WHERE hash = ?", (block_hash,)).fetchone()
        if row is None:
            raise KeyError(f"no undo record for block {block_hash.hex()}")
        return _changes_decoder.decode(row[0])

    def write_state_rows(self, state: StateTables, changed: Sequence[StateChanges]) -> None:
        """Write the current value (or absence) of every row that `changed` touched."""
        self._write_rows(
            "accounts", "address", state.accounts, {k for c in changed for k in c.accounts}
        )
        self._write_rows("tickets", "id", state.tickets, {k for c in changed for k in c.tickets})
        self._write_rows("tasks", "id", state.tasks, {k for c in changed for k in c.tasks})
        self._write_rows(
            "positions", "id", state.positions, {k for c in changed for k in c.positions}
        )

    def _write_rows(
        self, table: str, key_column: str, current: Mapping[Any, msgspec.Struct], keys: set[Any]
    ) -> None:
        present = [(key, canonical_bytes(current[key])) for key in keys if key in current]
        absent = [(key,) for key in keys if key not in current]
        self._db.executemany(
            f"INSERT OR REPLACE INTO {table} ({key_column}, data) VALUES (?, ?)", present
        )
        self._db.executemany(f"DELETE FROM {table} WHERE {key_column} = ?", absent)

    def load_state(self) -> StateTables:
        accounts = {
            address: _account_decoder.decode(data)
            for address, data in self._db.execute("SELECT address, data FROM accounts")
        }
        tickets = {
            bytes(key): _ticket_decoder.decode(data)
            for key, data in self._db.execute("SELECT id, data FROM tickets")
        }
        tasks = {
            bytes(key): _task_decoder.decode(data)
            for key, data in self._db.execute("SELECT id, data FROM tasks")
        }
        positions = {
            bytes(key): _position_decoder.decode(data)
            for key, data in self._db.execute("SELECT id, data FROM positions")
        }
        return StateTables(accounts, tickets, tasks, positions)
