"""The chain: every known block indexed by hash, the heaviest branch applied to the state.

Fork choice is by cumulative work (ties keep the current tip). A heavier side branch causes a
reorg: the main chain's blocks are reverted down to the fork point with their undo records and
the branch's blocks applied, all in memory first and then persisted in one store transaction.
A branch block that fails on the way is dropped with its descendants and the old chain restored.

A branch forking more than `max_reorg_depth` below the tip must outweigh the main chain by a
factor, counted from the fork (`deep_reorg_allowed`): a node split off by load rejoins the
network once the network's branch carries that much more work, while a long-range rewrite needs
that much more work than the honest chain made over the same stretch, not a bare majority.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pouw.blockchain.block import BLOCK_VERSION, Block, BlockHeader, encode_block, merkle_root
from pouw.blockchain.difficulty import next_difficulty
from pouw.blockchain.params import ChainParams, genesis_block
from pouw.blockchain.slashing import ReexecutionCheck
from pouw.blockchain.state import ClaimRule, LedgerState, StateChanges
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import Transaction, reward_transaction
from pouw.blockchain.validation import SealRule, check_block_alone, check_header_in_context
from pouw.crypto import ZERO_HASH, sha256
from pouw.errors import InvalidBlock, PouwError, ReorgTooDeep


class ChainMismatch(PouwError):
    """The data dir holds a chain with other consensus parameters."""


class AddStatus(enum.Enum):
    EXTENDED = "extended"
    REORGANIZED = "reorganized"
    SIDE_BRANCH = "side_branch"
    DUPLICATE = "duplicate"
    ORPHAN = "orphan"


@dataclass(frozen=True)
class ChainUpdate:
    status: AddStatus
    block_hash: bytes
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class IndexEntry:
    hash: bytes
    header: BlockHeader
    total_work: int

    @property
    def height(self) -> int:
        return self.header.height


def deep_reorg_allowed(fork_work: int, main_work: int, branch_work: int, work_percent: int) -> bool:
    """Whether a reorg past `max_reorg_depth` is taken: the branch's work since the fork is
    at least `work_percent` % of the main chain's since the fork. Integer arithmetic on the
    cumulative work of the fork point, the tip and the branch's head, so that every node
    decides the same from the same blocks."""
    return (branch_work - fork_work) * 100 >= (main_work - fork_work) * work_percent


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Chain:
    def __init__(
        self,
        store: ChainStore,
        params: ChainParams | None = None,
        *,
        seal_rules: Sequence[SealRule] = (),
        claim_rule: ClaimRule | None = None,
        reexecution: ReexecutionCheck | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.store = store
        self.seal_rules = tuple(seal_rules)
        self.claim_rule = claim_rule
        """Checks what a block's iteration claims against the branch's state when the block
        is applied (`pouw.mining.claims`); None: blocks claim nothing (ledger-only tests)."""
        self.clock_ms = clock_ms
        stored_params = store.params()
        if stored_params is None:
            if params is None:
                raise ChainMismatch(f"{store.path} holds no chain and no params were given")
            self.params = params
            self.state = LedgerState.genesis(params, reexecution)
            self._write_genesis()
        else:
            if params is not None and params != stored_params:
                raise ChainMismatch(
                    f"{store.path} holds chain {stored_params.chain_id!r} with other parameters"
                )
            self.params = stored_params
            self.state = LedgerState(stored_params, reexecution)
            self.state.load(store.load_state())
        self._index: dict[bytes, IndexEntry] = {
            stored.hash: IndexEntry(stored.hash, stored.header, stored.total_work)
            for stored in store.stored_blocks()
        }
        self._main: list[bytes] = store.main_chain()
        if not self._main or store.tip_hash() != self._main[-1]:
            raise ChainMismatch(f"{store.path}: tip pointer and main chain disagree")

    def _write_genesis(self) -> None:
        genesis = genesis_block(self.params)
        genesis_hash = genesis.hash()
        with self.store.transaction():
            self.store.write_params(self.params)
            self.store.put_block(genesis, genesis_hash, 0, encode_block(genesis))
            self.store.set_main(0, genesis_hash)
            genesis_rows = StateChanges(
                accounts=dict.fromkeys(self.state.accounts), tasks=dict.fromkeys(self.state.tasks)
            )
            self.store.write_state_rows(self.state.tables(), [genesis_rows])
            self.store.write_tip(genesis_hash)

    # -- queries ---------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self._main) - 1

    @property
    def tip(self) -> IndexEntry:
        return self._index[self._main[-1]]

    @property
    def genesis_hash(self) -> bytes:
        return self._main[0]

    def main_hashes(self) -> list[bytes]:
        return list(self._main)

    def hash_at(self, height: int) -> bytes | None:
        return self._main[height] if 0 <= height < len(self._main) else None

    def entry(self, block_hash: bytes) -> IndexEntry | None:
        return self._index.get(block_hash)

    def contains(self, block_hash: bytes) -> bool:
        return block_hash in self._index

    def is_main(self, block_hash: bytes) -> bool:
        entry = self._index.get(block_hash)
        return entry is not None and self.hash_at(entry.height) == block_hash

    def block(self, block_hash: bytes) -> Block | None:
        return self.store.block(block_hash)

    def block_at(self, height: int) -> Block | None:
        block_hash = self.hash_at(height)
        return None if block_hash is None else self.store.block(block_hash)

    def ancestor_headers(self, block_hash: bytes, count: int) -> list[BlockHeader]:
        """Up to `count` headers ending with `block_hash`'s, oldest first."""
        headers: list[BlockHeader] = []
        entry = self._index.get(block_hash)
        while entry is not None and len(headers) < count:
            headers.append(entry.header)
            entry = self._index.get(entry.header.prev_hash) if entry.height > 0 else None
        headers.reverse()
        return headers

    def _context_depth(self) -> int:
        return max(self.params.retarget_window + 1, self.params.median_time_window)

    def next_difficulty(self) -> int:
        return next_difficulty(
            self.params, self.ancestor_headers(self._main[-1], self._context_depth())
        )

    # -- block production ------------------------------------------------------------------

    def assemble_block(
        self,
        miner: bytes,
        miner_address: str,
        transactions: Iterable[Transaction],
        *,
        timestamp_ms: int | None = None,
        iteration_message: bytes = b"",
        history_commitment: bytes = ZERO_HASH,
        precursor: bytes = ZERO_HASH,
        device_class: str = "cpu",
        parent_hash: bytes | None = None,
    ) -> Block:
        """An unsealed, unsigned block on the tip (or on `parent_hash`); the miner fills in the
        nonce and the signature."""
        parent = self.tip if parent_hash is None else self._index[parent_hash]
        ancestors = self.ancestor_headers(parent.hash, self._context_depth())
        median_past = sorted(h.timestamp_ms for h in ancestors[-self.params.median_time_window :])
        earliest = median_past[(len(median_past) - 1) // 2] + 1
        timestamp = max(timestamp_ms if timestamp_ms is not None else self.clock_ms(), earliest)
        body = list(transactions)
        height = parent.height + 1
        reward = reward_transaction(
            miner_address, self.params.block_reward + sum(tx.fee for tx in body), height
        )
        txs = (reward, *body)
        header = BlockHeader(
            version=BLOCK_VERSION,
            height=height,
            prev_hash=parent.hash,
            merkle_root=merkle_root([tx.txid() for tx in txs]),
            timestamp_ms=timestamp,
            difficulty=next_difficulty(self.params, ancestors),
            nonce=0,
            miner=miner,
            iteration_hash=sha256(iteration_message),
            history_commitment=history_commitment,
            precursor=precursor,
            device_class=device_class,
        )
        return Block(header=header, transactions=txs, iteration_message=iteration_message)

    # -- adding blocks ---------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Blocks added inside reach the disk in one transaction, one fsync for all (chain
        sync). An exception that ends the batch early still commits the blocks added before
        it: they are already part of the in-memory chain, so they must be on disk too."""
        with self.store.transaction(commit_on_error=True):
            yield

    def add_block(self, block: Block, encoded: bytes | None = None) -> ChainUpdate:
        """Validate and store a block; raise InvalidBlock (or ReorgTooDeep: a branch forking past
        max_reorg_depth that does not outweigh the main chain by deep_reorg_work_percent)."""
        block_hash = block.hash()
        if block_hash in self._index:
            return ChainUpdate(AddStatus.DUPLICATE, block_hash)
        parent = self._index.get(block.header.prev_hash)
        if parent is None:
            return ChainUpdate(AddStatus.ORPHAN, block_hash)
        encoded = encoded if encoded is not None else encode_block(block)
        txids = [tx.txid() for tx in block.transactions]
        check_block_alone(block, block_hash, txids, len(encoded), self.params)
        for rule in self.seal_rules:
            rule(block)
        ancestors = self.ancestor_headers(parent.hash, self._context_depth())
        check_header_in_context(block.header, ancestors, self.params, self.clock_ms())
        entry = IndexEntry(block_hash, block.header, parent.total_work + block.header.difficulty)

        if parent.hash == self._main[-1]:
            changes = self._apply(block, txids)
            with self.store.transaction():
                self.store.put_block(block, block_hash, entry.total_work, encoded)
                self.store.put_undo(block_hash, changes)
                self.store.set_main(entry.height, block_hash)
                self._write_state(changes)
                self.store.write_tip(block_hash)
            self._index[block_hash] = entry
            self._main.append(block_hash)
            return ChainUpdate(AddStatus.EXTENDED, block_hash, connected=[block])

        if entry.total_work <= self.tip.total_work:
            with self.store.transaction():
                self.store.put_block(block, block_hash, entry.total_work, encoded)
            self._index[block_hash] = entry
            return ChainUpdate(AddStatus.SIDE_BRANCH, block_hash)
        return self._reorganize(block, entry, encoded)

    def _apply(self, block: Block, txids: list[bytes]) -> StateChanges:
        claim = self.claim_rule(block, self.state) if self.claim_rule is not None else None
        return self.state.apply_block(block, txids, claim)

    def _write_state(self, *all_changes: StateChanges) -> None:
        self.store.write_state_rows(self.state.tables(), all_changes)

    def _branch_to(self, entry: IndexEntry) -> list[IndexEntry]:
        """The side-branch entries from just above the fork point up to `entry`."""
        branch = [entry]
        while not self.is_main(branch[-1].header.prev_hash):
            branch.append(self._index[branch[-1].header.prev_hash])
        branch.reverse()
        return branch

    def _reorganize(self, block: Block, entry: IndexEntry, encoded: bytes) -> ChainUpdate:
        self._index[entry.hash] = entry
        branch = self._branch_to(entry)
        fork_height = branch[0].height - 1
        depth = self.height - fork_height
        if depth > self.params.max_reorg_depth and not deep_reorg_allowed(
            self._index[self._main[fork_height]].total_work,
            self.tip.total_work,
            entry.total_work,
            self.params.deep_reorg_work_percent,
        ):
            with self.store.transaction():
                self.store.put_block(block, entry.hash, entry.total_work, encoded)
            raise ReorgTooDeep(depth, self.params.max_reorg_depth)

        old_hashes = self._main[fork_height + 1 :]
        disconnected = [self._load(h, block) for h in reversed(old_hashes)]
        undone = [self.store.undo(h) for h in reversed(old_hashes)]
        for changes in undone:
            self.state.revert(changes)

        connected: list[Block] = []
        applied: list[StateChanges] = []
        for branch_entry in branch:
            branch_block = self._load(branch_entry.hash, block)
            try:
                changes = self._apply(branch_block, [tx.txid() for tx in branch_block.transactions])
            except InvalidBlock:
                for changes in reversed(applied):
                    self.state.revert(changes)
                self._restore_main(list(reversed(disconnected)))
                self._forget_branch_from(branch_entry)
                raise
            connected.append(branch_block)
            applied.append(changes)

        with self.store.transaction():
            self.store.put_block(block, entry.hash, entry.total_work, encoded)
            self.store.truncate_main(fork_height)
            for branch_entry, changes in zip(branch, applied, strict=True):
                self.store.set_main(branch_entry.height, branch_entry.hash)
                self.store.put_undo(branch_entry.hash, changes)
            self._write_state(*undone, *applied)
            self.store.write_tip(entry.hash)
        self._main[fork_height + 1 :] = [e.hash for e in branch]
        return ChainUpdate(AddStatus.REORGANIZED, entry.hash, connected, disconnected)

    def _load(self, block_hash: bytes, pending: Block) -> Block:
        if block_hash == pending.hash():
            return pending
        block = self.store.block(block_hash)
        if block is None:
            raise KeyError(f"block {block_hash.hex()} is indexed but not stored")
        return block

    def _restore_main(self, blocks: list[Block]) -> None:
        for block in blocks:
            self._apply(block, [tx.txid() for tx in block.transactions])

    def _forget_branch_from(self, bad: IndexEntry) -> None:
        """Drop an invalid block and every indexed descendant of it."""
        doomed = {bad.hash}
        for entry in sorted(self._index.values(), key=lambda e: e.height):
            if entry.header.prev_hash in doomed:
                doomed.add(entry.hash)
        with self.store.transaction():
            for block_hash in doomed:
                self.store.delete_block(block_hash)
        for block_hash in doomed:
            self._index.pop(block_hash, None)
