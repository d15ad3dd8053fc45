"""The node's ledger: the chain, the mempool and its journal, the block template miners seal,
the node's own transactions (signed, admitted, announced), and each task's draw.

Every change of the main chain is told as events (block_connected, block_disconnected,
chain_changed); every admitted transaction as transaction_admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pouw.blockchain.block import Block
from pouw.blockchain.chain import AddStatus, Chain, ChainUpdate
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import (
    Payload,
    Transaction,
    coins,
    decode_transaction,
    encode_transaction,
    sign_transaction,
)
from pouw.economics.selection import TaskAssignment, assignment_of
from pouw.errors import InvalidTransaction, MalformedData, PouwError
from pouw.mining.claims import ClaimRule
from pouw.mining.verify import BlockVerifier
from pouw.ml.datasets import load_dataset
from pouw.network.messages import ItemKind
from pouw.node.announcer import Announcer
from pouw.node.context import NodeContext
from pouw.node.mempool_journal import MempoolJournal
from pouw.spec import DEFAULT_FEE, TaskSpec

log = logging.getLogger("pouw.node")

MEMPOOL_JOURNAL = "mempool.journal"
TEMPLATE_REFRESH_S = 0.25
"""Gossiped transactions refresh the block template at most this often: a refresh
trial-applies the mempool's best transactions, too costly to repeat for each one in a flood."""
REBROADCAST_TICKS = 6
"""Pending transactions are announced again every this many ticks (3 s)."""
REBROADCAST_LIMIT = 200


class NodeNotRunning(PouwError, RuntimeError):
    pass


class Ledger:
    def __init__(self, context: NodeContext, announcer: Announcer) -> None:
        self.context = context
        self.announcer = announcer
        self.mempool = Mempool()
        self.journal = MempoolJournal(
            context.config.data_dir / MEMPOOL_JOURNAL, 2 * self.mempool.max_transactions
        )
        self.seal = BlockVerifier(
            context.params,
            self.open_task_spec,
            datasets=lambda spec: load_dataset(spec.dataset, context.datasets),
        )
        """The PoUW seal every block must pass: its iteration re-executed."""
        self.template: Block | None = None
        """The block a miner seals next: the tip's child with the mempool's best."""
        self._chain: Chain | None = None
        self._template_timer: asyncio.TimerHandle | None = None
        context.events.tick.subscribe(self._on_tick)

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            node = self.context.node_id
            raise NodeNotRunning(f"node {node} is not started: await node.start() first")
        return self._chain

    @property
    def is_open(self) -> bool:
        return self._chain is not None

    def open(self) -> None:
        """The stored chain, and the journaled transactions that still apply."""
        self._chain = Chain(
            ChainStore(self.context.config.data_dir),
            self.context.params,
            reexecution=self.seal.failure,  # a block rejected already costs nothing again
        )
        self._chain.seal_rules = (self.seal,)
        self._chain.claim_rule = ClaimRule()
        self.context.metrics.chain_height.set(self._chain.height)

    def close(self) -> None:
        if self._template_timer is not None:
            self._template_timer.cancel()
        self.journal.close()
        self.chain.store.close()

    # -- the node's own transactions -------------------------------------------------------------

    def submit(self, payload: Payload, fee: float = DEFAULT_FEE) -> Transaction:
        """Sign `payload` with the node's key at its next nonce, admit it and announce it;
        raises InvalidTransaction with the rule it breaks."""
        key, state = self.context.key, self.chain.state
        pending = sum(1 for tx in self.mempool.transactions() if tx.sender == key.public_key)
        tx = sign_transaction(
            key,
            payload,
            nonce=state.account(key.address).nonce + pending,
            fee=coins(fee),
            chain_id=self.context.params.chain_id,
        )
        return self._admit_and_announce(tx, encode_transaction(tx))

    def relay(self, encoded: bytes) -> Transaction:
        """A transaction signed elsewhere (a faucet's transfer through the API), admitted and
        announced as the node's own are; MalformedData or InvalidTransaction."""
        return self._admit_and_announce(decode_transaction(encoded), encoded)

    def _admit_and_announce(self, tx: Transaction, encoded: bytes) -> Transaction:
        self.admit(tx, encoded)
        self.announcer.announce(ItemKind.TX, tx.txid(), encoded)
        self.refresh_template()
        return tx

    # -- the mempool and its journal ---------------------------------------------------------------

    def admit(self, tx: Transaction, encoded: bytes) -> None:
        """Into the mempool (or InvalidTransaction), and into its journal."""
        self.mempool.add(tx, self.chain.state, len(encoded))
        if self.journal.full:
            self.rewrite_journal()  # the mempool holds this one already
        else:
            self.journal.append(encoded)
        self.context.events.transaction_admitted.emit(tx)

    def restore_mempool(self) -> None:
        """Re-admit the journaled transactions that still apply; the journal keeps only those."""
        for encoded in self.journal.replay():
            with contextlib.suppress(MalformedData, InvalidTransaction):
                tx = decode_transaction(encoded)
                self.mempool.add(tx, self.chain.state, len(encoded))
                self.context.events.transaction_admitted.emit(tx)
        self.rewrite_journal()
        if len(self.mempool):
            log.info("%d pending transactions restored from the journal", len(self.mempool))

    def rewrite_journal(self) -> None:
        pending = sorted(self.mempool.transactions(), key=lambda tx: (tx.sender, tx.nonce))
        self.journal.rewrite(encode_transaction(tx) for tx in pending)

    def _on_tick(self, tick: int) -> None:
        """Announce pending transactions again: peers that joined after we first announced
        them (or lost them in a reorg) would otherwise never hear of them."""
        if tick % REBROADCAST_TICKS == 0:
            for tx in self.mempool.transactions()[:REBROADCAST_LIMIT]:
                self.announcer.announce(ItemKind.TX, tx.txid(), encode_transaction(tx))

    # -- blocks ------------------------------------------------------------------------------------

    def accept_block(self, block: Block, encoded: bytes | None = None) -> ChainUpdate:
        """Store a block (raises InvalidBlock or ReorgTooDeep); when the main chain moves, tell
        it and bring the mempool, its journal and the template along."""
        chain = self.chain
        update = chain.add_block(block, encoded)
        if update.status not in (AddStatus.EXTENDED, AddStatus.REORGANIZED):
            return update
        events = self.context.events
        for gone in update.disconnected:
            events.block_disconnected.emit(gone)
        for added in update.connected:
            events.block_connected.emit(added)
        self.mempool.remove_confirmed(update.connected, chain.state)
        if update.disconnected:
            self.mempool.readmit(update.disconnected, chain.state)
            self.rewrite_journal()
        self.context.metrics.chain_height.set(chain.height)
        self.context.metrics.blocks_accepted.inc(len(update.connected))
        self.refresh_template()
        events.chain_changed.emit(update)
        return update

    def refresh_template(self) -> None:
        if self._chain is None:
            return
        chain = self._chain
        max_bytes = self.context.params.max_block_bytes // 2
        body = self.mempool.select(chain.state, max_bytes, chain.height + 1)
        key = self.context.key
        self.template = chain.assemble_block(key.public_key, key.address, body)

    def refresh_template_soon(self) -> None:
        loop = self.context.background.loop
        if self._template_timer is None and loop is not None:
            self._template_timer = loop.call_later(TEMPLATE_REFRESH_S, self._template_due)

    def _template_due(self) -> None:
        self._template_timer = None
        self.refresh_template()

    # -- tasks -------------------------------------------------------------------------------------

    def open_task_spec(self, task_id: bytes) -> TaskSpec | None:
        chain = self._chain
        record = chain.state.tasks.get(task_id) if chain else None
        return None if record is None or record.status != "open" else record.spec

    def draw(self, record: TaskRecord) -> TaskAssignment | None:
        """The task's workers as the main chain drew them (None until block
        `height + draw_delay`, `pouw.blockchain.draw`)."""
        return assignment_of(record)
