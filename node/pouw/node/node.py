"""PoUWNode: one node of the network, composing chain, mempool, miner, network and roles.

Everything that touches the chain runs on the node's asyncio loop; training runs in the
mining worker's threads and hands blocks and iteration messages back with
`call_soon_threadsafe`; verifiers and evaluators re-run models in a one-thread executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cachetools import FIFOCache

from pouw.blockchain.block import Block, decode_block, encode_block
from pouw.blockchain.chain import AddStatus, Chain, ChainUpdate
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.ml_task import MLTask
from pouw.blockchain.params import ChainParams, bootstrap_task_id
from pouw.blockchain.state import TaskRecord
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import (
    COIN,
    BuyTicket,
    PayForTask,
    Payload,
    Reward,
    SlashEvidence,
    TaskResult,
    Transaction,
    coins,
    decode_transaction,
    encode_transaction,
    sign_transaction,
)
from pouw.config import NodeConfig
from pouw.crypto import HASH_SIZE, KeyPair, address_of, sha256
from pouw.economics.reputation import Reputation
from pouw.economics.selection import TaskAssignment, assign
from pouw.errors import InvalidBlock, InvalidTransaction, MalformedData
from pouw.mining.checkpoint import TrainerCheckpoints
from pouw.mining.messages import IterationMessage, decode_iteration_message
from pouw.mining.miner import Miner, MiningStats, PublishedIteration
from pouw.mining.peers import PeerUpdates
from pouw.mining.trainer import TaskTrainer
from pouw.mining.verify import BlockVerifier
from pouw.ml.aggregation import UNSCREENED
from pouw.ml.compression import CompressedUpdate
from pouw.ml.iteration import configure_determinism
from pouw.ml.models import build_model, model_hash, model_to_bytes, parameter_count
from pouw.monitoring.health import HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.gossip import Network
from pouw.network.messages import ChainInfo, ItemKind, ItemResult, Verdict
from pouw.node.byzantine import ByzantineMiner
from pouw.node.evaluation import score_models, task_result
from pouw.node.identity import load_node_key, network_params
from pouw.node.items import (
    BlockVerdict,
    FinalModel,
    IterationBatch,
    IterationRecord,
    decode_item,
    encode_item,
    has_valid_signature,
    sign_batch,
    sign_final_model,
    sign_verdict,
)
from pouw.node.mempool_journal import MempoolJournal
from pouw.node.screening import MIN_SCREENED, ScreenedRound, TaskScreen
from pouw.node.sync import block_locator, blocks_after
from pouw.node.tasks import TaskBook
from pouw.node.views import HealthMetrics, TaskView, TicketView
from pouw.node.worker import FinishedTraining, Job, MiningWorker
from pouw.roles import NodeRole
from pouw.security import SenderScreen
from pouw.security.detection import MIN_UPDATES
from pouw.spec import DEFAULT_FEE, ModelSpec, TaskSpec, check_task_spec

log = logging.getLogger(__name__)

EVALUATION_GRACE_S = 60.0
"""How long an evaluator waits for missing final models after the first one arrives."""
RECENT_ITEMS = 4096
MEMPOOL_JOURNAL = "mempool.journal"
ITERATION_BATCH_MAX = 1024
ITERATION_FLUSH_S = 0.5
REBROADCAST_EVERY_S = 3
REBROADCAST_LIMIT = 200
TEMPLATE_REFRESH_S = 0.25
"""Gossiped transactions refresh the block template at most this often: a refresh
trial-applies the mempool's best transactions, too costly to repeat for each one in a flood."""
AWAITED_EVIDENCE = 256
"""Rejected blocks whose IT_RES has not arrived yet, kept to slash once it does."""
SCREENING_ROLES = (NodeRole.SUPERVISOR, NodeRole.VERIFIER, NodeRole.EVALUATOR)


class NodeNotRunning(RuntimeError):
    pass


class PoUWNode:
    def __init__(
        self,
        node_id: str,
        role: NodeRole | str = NodeRole.PEER,
        config: NodeConfig | None = None,
        port: int | None = None,
        *,
        params: ChainParams | None = None,
    ) -> None:
        if config is None:
            config = NodeConfig(node_id=node_id, role=NodeRole.parse(str(role)))
            if port is not None:
                config.port = port
        if config.data_dir == NodeConfig().data_dir:
            config.data_dir = Path(".data") / node_id  # one dir per node, even in one process
        self.node_id = node_id
        self.role = NodeRole.parse(str(role)) if role else config.role
        self.config = config
        self.params = params or network_params(config.chain_id)
        self.key: KeyPair = load_node_key(
            config.data_dir, node_id, self.params.chain_id, config.node_key_file
        )
        self.address = self.key.address
        self.metrics = NodeMetrics()
        self.health = HealthTracker()
        self.reputation = Reputation()
        self.tasks = TaskBook(config.data_dir / "models")
        self.mempool = Mempool()
        self._mempool_journal = MempoolJournal(
            config.data_dir / MEMPOOL_JOURNAL, 2 * self.mempool.max_transactions
        )
        self.is_running = False
        self.blocks_mined = 0
        self.rewards_earned = 0
        self.blocks_verified = 0
        self.blocks_rejected = 0
        self.mining_stats = MiningStats()
        self._chain: Chain | None = None
        self._network: Network | None = None
        self._worker: MiningWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._template: Block | None = None
        self._template_timer: asyncio.TimerHandle | None = None
        self._job: Job | None = None
        self._finished: set[bytes] = set()
        self._evaluations: set[bytes] = set()
        self._first_final_model: dict[bytes, float] = {}
        self._assignments: dict[tuple[bytes, bytes], TaskAssignment] = {}
        self._items: dict[ItemKind, FIFOCache[bytes, bytes]] = {
            kind: FIFOCache(RECENT_ITEMS) for kind in ItemKind
        }
        self._verdicts: FIFOCache[bytes, BlockVerdict] = FIFOCache(RECENT_ITEMS)
        self.attacks_detected: Counter[str] = Counter()
        self.screens: dict[bytes, TaskScreen | None] = {}
        """Per task: how this node screens its miners' updates (None: it does not)."""
        self._inboxes: dict[bytes, PeerUpdates] = {}
        self._fake_work: FIFOCache[bytes, InvalidBlock] = FIFOCache(RECENT_ITEMS)
        """Blocks whose re-execution failed: always invalid, never re-run."""
        self._awaiting_evidence: FIFOCache[bytes, tuple[Block, str]] = FIFOCache(AWAITED_EVIDENCE)
        self._reported: set[bytes] = set()
        self._records: FIFOCache[bytes, IterationRecord] = FIFOCache(RECENT_ITEMS)
        self._unsent_iterations: list[IterationRecord] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pouw-check")
        self._background: set[asyncio.Task[Any]] = set()
        self.verifier = BlockVerifier(self.params, self._open_task_spec)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            raise NodeNotRunning(f"node {self.node_id} is not started: await node.start() first")
        return self._chain

    @property
    def network(self) -> Network | None:
        return self._network

    @property
    def _requests_path(self) -> Path:
        return self.config.data_dir / "requests.json"

    async def start(self) -> None:
        if self.is_running:
            return
        configure_determinism()
        self._loop = asyncio.get_running_loop()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._chain = Chain(ChainStore(self.config.data_dir), self.params)
        self._chain.seal_rules = (self.verifier,)
        self._recount()
        self._restore_mempool()
        self._network = Network(
            self.key,
            self,
            host=self.config.host,
            port=self.config.port,
            bootstrap_peers=[tuple(peer) for peer in self.config.bootstrap_peers],  # type: ignore[misc]
            max_peers=self.config.max_peers,
            secure=self.config.enable_security,
            network_key=_network_key(self.config.network_key),
            metrics=self.metrics,
        )
        await self._network.start()
        self.is_running = True
        self._restore_final_models()
        self._refresh()
        self._spawn(self._housekeeping())
        log.info("node %s (%s) up at height %d", self.node_id, self.role, self.chain.height)

    async def stop(self) -> None:
        if not self.is_running:
            return
        self.is_running = False
        if self._template_timer is not None:
            self._template_timer.cancel()
        await self.stop_mining()
        for task in list(self._background):
            task.cancel()
        if self._network is not None:
            await self._network.stop()
        self._executor.shutdown(wait=True)
        self._mempool_journal.close()
        self.chain.store.close()

    async def start_mining(self) -> None:
        if self._worker is not None and self._worker.running:
            return
        if not self.is_running:
            raise NodeNotRunning("start the node before mining")
        loop = self._loop
        assert loop is not None
        tampering = None
        if self.config.attack is not None:
            log.warning(
                "node %s is a Byzantine miner (%s): devnet demo", self.node_id, self.config.attack
            )
            bootstrap = bootstrap_task_id(self.params)
            tampering = ByzantineMiner(
                self.config.attack, lambda task_id: task_id != bootstrap, self.key.public_key
            )
        miner = Miner(
            self.key,
            self.params,
            lambda: self._template,
            on_block=lambda block: self._on_loop(self._own_block, block),
            on_iteration=lambda published: self._on_loop(self._own_iteration, published),
            intensity=self.config.mining_intensity,
            device_class=self.config.device,
            tampering=tampering,
        )
        self.mining_stats = miner.stats
        self._worker = MiningWorker(
            miner,
            self.key.public_key,
            lambda: self._job,
            on_finished=lambda done: self._on_loop(self._finished_training, done),
            on_progress=self._training_progress,
            on_failed=lambda job, why: self._on_loop(self._training_failed, job, why),
            checkpoints=self._trainer_checkpoints(),
        )
        self._refresh_job()
        self._worker.start()

    def _trainer_checkpoints(self) -> TrainerCheckpoints:
        """This node's saved trainers, less those of tasks no longer open."""
        checkpoints = TrainerCheckpoints(self.config.data_dir / "trainers")
        tasks = self.chain.state.tasks
        checkpoints.keep_only(t for t, record in tasks.items() if record.status == "open")
        return checkpoints

    async def stop_mining(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the node's loop (from a mining or checking thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    @property
    def is_mining(self) -> bool:
        return self._worker is not None and self._worker.running

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _housekeeping(self) -> None:
        ticks = 0
        while self.is_running:
            await asyncio.sleep(ITERATION_FLUSH_S)
            self._flush_iterations()
            ticks += 1
            if ticks % 2:
                continue
            self.metrics.peers.set(self._network.peer_count() if self._network else 0)
            self.metrics.tasks_training.set(self._tasks_training())
            for task_id in list(self._first_final_model):
                self._maybe_evaluate(task_id)
            if ticks % (2 * REBROADCAST_EVERY_S) == 0:
                self._rebroadcast()

    def _rebroadcast(self) -> None:
        """Announce pending transactions again: peers that joined after we first announced
        them (or lost them in a reorg) would otherwise never hear of them."""
        for tx in self.mempool.transactions()[:REBROADCAST_LIMIT]:
            self._announce(ItemKind.TX, tx.txid(), encode_transaction(tx))

    # -- seed API: staking and tasks -----------------------------------------------------------

    def stake_and_register(self, amount: float, role: NodeRole | str | None = None) -> TicketView:
        """Buy a ticket for `role` (default: this node's role) locking `amount` coins."""
        ticket_role = NodeRole.parse(str(role)) if role else self.role
        tx = self._submit(BuyTicket(role=ticket_role, amount=coins(amount)))
        return TicketView(
            ticket_id=tx.txid().hex(),
            role=ticket_role.value,
            amount=amount,
            owner=self.address,
            confirmed=False,
        )

    def stake(
        self, amount: float, role: NodeRole | None = None, request_id: str | None = None
    ) -> TicketView:
        """Buy a ticket; a repeated `request_id` returns the first purchase's ticket (confirmed
        once it is on chain) without buying again."""
        key = None if request_id is None else f"stake:{request_id}"  # apart from task ids
        requests = self._load_requests()
        if key is not None and key in requests:
            return self._ticket_view(bytes.fromhex(requests[key]), amount, role)
        ticket = self.stake_and_register(amount, role)
        if key is not None:
            requests[key] = ticket.ticket_id
            self._save_requests(requests)
        return ticket

    def _ticket_view(self, ticket_id: bytes, amount: float, role: NodeRole | None) -> TicketView:
        """A ticket this node bought: from the chain once mined, else from the mempool, else
        (dropped, or slashed since) what was asked for, unconfirmed."""
        ticket = self.chain.state.tickets.get(ticket_id)
        if ticket is not None:
            return TicketView(
                ticket_id.hex(), ticket.role.value, ticket.amount / COIN, ticket.owner, True
            )
        tx = self.mempool.get(ticket_id)
        if tx is not None and isinstance(tx.payload, BuyTicket):
            bought = tx.payload
            return TicketView(
                ticket_id.hex(), bought.role.value, bought.amount / COIN, self.address, False
            )
        return TicketView(ticket_id.hex(), (role or self.role).value, amount, self.address, False)

    async def submit_task(
        self, task: MLTask | TaskSpec, fee: float = DEFAULT_FEE, reward: float | None = None
    ) -> bool:
        """Pay for a task; True once the payment is in the mempool and announced."""
        spec = task.to_spec() if isinstance(task, MLTask) else task
        amount = reward if reward is not None else getattr(task, "reward_amount", 10.0)
        await self.submit_task_spec(spec, amount, fee)
        return True

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        check_task_spec(spec)
        requests = self._load_requests()
        if request_id is not None and request_id in requests:
            return requests[request_id]
        tx = self._submit(PayForTask(spec=spec, reward=coins(reward)), fee=fee)
        task_id = tx.txid().hex()
        self.tasks.pending[tx.txid()] = (self.address, reward)
        if request_id is not None:
            requests[request_id] = task_id
            self._save_requests(requests)
        return task_id

    def _load_requests(self) -> dict[str, str]:
        if not self._requests_path.exists():
            return {}
        loaded: dict[str, str] = json.loads(self._requests_path.read_text())
        return loaded

    def _save_requests(self, requests: dict[str, str]) -> None:
        temporary = self._requests_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(requests))
        temporary.replace(self._requests_path)

    def _submit(self, payload: Payload, fee: float = DEFAULT_FEE) -> Transaction:
        state = self.chain.state
        pending = sum(1 for tx in self.mempool.transactions() if tx.sender == self.key.public_key)
        tx = sign_transaction(
            self.key,
            payload,
            nonce=state.account(self.address).nonce + pending,
            fee=coins(fee),
            chain_id=self.params.chain_id,
        )
        encoded = encode_transaction(tx)
        self._admit(tx, encoded)
        self._announce(ItemKind.TX, tx.txid(), encoded)
        self._refresh_template()
        return tx

    def _admit(self, tx: Transaction, encoded: bytes) -> None:
        """Into the mempool (or InvalidTransaction), and into its journal."""
        self.mempool.add(tx, self.chain.state, len(encoded))
        journal = self._mempool_journal
        if journal.full:
            self._rewrite_mempool_journal()  # the mempool holds this one already
        else:
            journal.append(encoded)

    def _restore_mempool(self) -> None:
        """Re-admit the journaled transactions that still apply; the journal keeps only those."""
        for encoded in self._mempool_journal.replay():
            with contextlib.suppress(MalformedData, InvalidTransaction):
                tx = decode_transaction(encoded)
                self.mempool.add(tx, self.chain.state, len(encoded))
                self._note_payment(tx)
        self._rewrite_mempool_journal()
        if len(self.mempool):
            log.info("%d pending transactions restored from the journal", len(self.mempool))

    def _rewrite_mempool_journal(self) -> None:
        pending = sorted(self.mempool.transactions(), key=lambda tx: (tx.sender, tx.nonce))
        self._mempool_journal.rewrite(encode_transaction(tx) for tx in pending)

    def _note_payment(self, tx: Transaction) -> None:
        """A task payment waiting in the mempool shows as a pending task."""
        if isinstance(tx.payload, PayForTask):
            self.tasks.pending[tx.txid()] = (tx.sender_address, tx.payload.reward / COIN)

    # -- seed API: status ----------------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        chain = self._chain
        job = self._job
        if not self.is_mining:
            mining = "not mining"
        elif job is None:
            mining = "idle: no task to train, so nothing to mine with"
        elif job.client_task:
            mining = f"training task {job.task_id.hex()[:16]}"
        else:
            mining = "training the bootstrap task"
        return {
            "node_id": self.node_id,
            "role": self.role.value,
            "attack": self.config.attack,
            "address": self.address,
            "is_running": self.is_running,
            "is_mining": self.is_mining,
            "mining": mining,
            "blockchain_height": chain.height if chain else 0,
            "tip": chain.tip.hash.hex() if chain else "",
            "peer_count": self._network.peer_count() if self._network else 0,
            "p2p_port": self._network.port if self._network and self.is_running else None,
            "mempool": len(self.mempool),
            "stats": {
                "blocks_mined": self.blocks_mined,
                "rewards_earned": self.rewards_earned / COIN,
                "iterations": self.mining_stats.iterations,
                "blocks_verified": self.blocks_verified,
                "blocks_rejected": self.blocks_rejected,
                "loss": _finite(self.mining_stats.last_loss),
                "accuracy": _finite(self.mining_stats.last_accuracy),
                "attacks_detected": dict(self.attacks_detected),
            },
        }

    def get_health_metrics(self) -> HealthMetrics:
        return self.health.snapshot()

    def get_economic_status(self) -> dict[str, Any]:
        state = self.chain.state
        tickets = [t for t in state.live_tickets() if t.owner == self.address]
        return {
            "address": self.address,
            "balance": state.balance(self.address) / COIN,
            "locked": state.account(self.address).locked / COIN,
            "staked": bool(tickets),
            "stake_amount": sum(t.amount for t in tickets) / COIN,
            "tickets": [
                {"ticket_id": t.ticket_id.hex(), "role": t.role.value, "amount": t.amount / COIN}
                for t in tickets
            ],
            "reputation": self.reputation.score(self.address),
            "peer_reputation": self.reputation.scores(),
            "rewards_earned": self.rewards_earned / COIN,
        }

    def block_summary(self, height: int) -> dict[str, Any] | None:
        block = self.chain.block_at(height)
        if block is None:
            return None
        header = block.header
        task = ""
        if block.iteration_message:
            with contextlib.suppress(MalformedData):
                task = decode_iteration_message(block.iteration_message).task_id.hex()
        verdict = self._verdicts.get(block.hash())
        return {
            "height": header.height,
            "hash": block.hash().hex(),
            "prev_hash": header.prev_hash.hex(),
            "timestamp_ms": header.timestamp_ms,
            "difficulty": header.difficulty,
            "nonce": header.nonce,
            "miner": address_of(header.miner) if header.miner else "",
            "task_id": task,
            "transactions": [
                {"txid": tx.txid().hex(), "kind": tx.kind, "fee": tx.fee / COIN}
                for tx in block.transactions
            ],
            "checkpoint_bytes": len(block.checkpoint),
            "verified": None if verdict is None else verdict.valid,
        }

    def task_views(self) -> list[TaskView]:
        bootstrap = bootstrap_task_id(self.params)
        views = [
            self._task_view(record)
            for task_id, record in self.chain.state.tasks.items()
            if task_id != bootstrap
        ]
        for task_id in self.tasks.pending:
            if task_id not in self.chain.state.tasks:
                view = self._pending_view(task_id)
                if view is not None:
                    views.append(view)
        return sorted(views, key=_chain_order)

    def _tasks_training(self) -> int:
        """Open client tasks whose drawn miners are still training (pouw_tasks_training)."""
        bootstrap = bootstrap_task_id(self.params)
        return sum(
            1
            for task_id, record in self.chain.state.tasks.items()
            if task_id != bootstrap
            and record.status == "open"
            and self._task_view(record).phase == "training"
        )

    def task_view(self, task_id: bytes) -> TaskView | None:
        record = self.chain.state.tasks.get(task_id)
        if record is None or task_id == bootstrap_task_id(self.params):
            return self._pending_view(task_id)
        return self._task_view(record)

    def _pending_view(self, task_id: bytes) -> TaskView | None:
        """A task this node paid for whose payment still waits in the mempool."""
        pending = self.tasks.pending.get(task_id)
        tx = self.mempool.get(task_id)
        if pending is None or tx is None or not isinstance(tx.payload, PayForTask):
            return None
        client, reward = pending
        spec = tx.payload.spec
        return TaskView(
            task_id=task_id.hex(),
            phase="pending",
            client=client,
            reward=reward,
            epochs=spec.epochs,
            dataset=spec.dataset.name,
            min_accuracy=spec.min_accuracy,
            created_height=None,
            message="payment not yet in a block",
        )

    def _task_view(self, record: TaskRecord) -> TaskView:
        evaluating = record.status == "open" and record.task_id in self._evaluations
        progress = self.tasks.of(record.task_id)
        assignment = self._assignment(record)
        if assignment is not None and assignment.miners and record.status == "open":
            drawn = {t.owner for t in assignment.miners}
            evaluating = evaluating or drawn <= set(progress.final_models)
        return self.tasks.view(record, assignment, evaluating=evaluating)

    def task_model(self, task_id: bytes) -> bytes | None:
        record = self.chain.state.tasks.get(task_id)
        if record is None or record.result is None or not record.result.ranking:
            return None
        return self.tasks.model_bytes(task_id, record.result.ranking[0].model_hash)

    # -- chain ---------------------------------------------------------------------------------

    def _open_task_spec(self, task_id: bytes) -> TaskSpec | None:
        chain = self._chain
        record = chain.state.tasks.get(task_id) if chain else None
        return None if record is None or record.status != "open" else record.spec

    def _assignment(self, record: TaskRecord) -> TaskAssignment | None:
        seed = self.chain.hash_at(record.height)
        if seed is None:
            return None
        key = (record.task_id, seed)
        if key not in self._assignments:
            self._assignments[key] = assign(self.chain.state, record, seed)
        return self._assignments[key]

    def _accept_block(self, block: Block, encoded: bytes | None = None) -> ChainUpdate:
        update = self.chain.add_block(block, encoded)
        if update.status in (AddStatus.EXTENDED, AddStatus.REORGANIZED):
            state = self.chain.state
            for gone in update.disconnected:
                self._tally(gone, -1)
            for added in update.connected:
                self._tally(added, +1)
            self.mempool.remove_confirmed(update.connected, state)
            if update.disconnected:
                self.mempool.readmit(update.disconnected, state)
                self._rewrite_mempool_journal()
            self.metrics.chain_height.set(self.chain.height)
            self.metrics.blocks_accepted.inc(len(update.connected))
            self._refresh()
        return update

    def _tally(self, block: Block, sign: int) -> None:
        """What a (dis)connected main-chain block means for this node's counters."""
        if block.header.miner == self.key.public_key:
            self.blocks_mined += sign
        for tx in block.transactions:
            payload = tx.payload
            if isinstance(payload, Reward) and payload.recipient == self.address:
                self.rewards_earned += sign * payload.amount
            if isinstance(payload, TaskResult):
                for payout in payload.payouts:
                    if payout.recipient == self.address:
                        self.rewards_earned += sign * payout.amount
            if isinstance(payload, SlashEvidence) and sign > 0:
                # proven on chain, so every node learns it; evidence = IT_RES || H(update)
                with contextlib.suppress(MalformedData):
                    cheat = decode_iteration_message(payload.evidence[:-HASH_SIZE])
                    self.reputation.rejected(address_of(cheat.miner))
        if block.iteration_message:
            with contextlib.suppress(MalformedData):
                message = decode_iteration_message(block.iteration_message)
                self.tasks.record_block(message.task_id, sign)

    def _recount(self) -> None:
        """Counters from the stored main chain, after a restart."""
        chain = self.chain
        for height in range(1, chain.height + 1):
            block = chain.block_at(height)
            if block is not None:
                self._tally(block, +1)
        self.metrics.chain_height.set(chain.height)

    def _refresh(self) -> None:
        self._refresh_template()
        self._refresh_job()

    def _refresh_template(self) -> None:
        if self._chain is None:
            return
        chain = self.chain
        body = self.mempool.select(chain.state, self.params.max_block_bytes // 2, chain.height + 1)
        self._template = chain.assemble_block(self.key.public_key, self.address, body)

    def _refresh_template_soon(self) -> None:
        if self._template_timer is None and self._loop is not None:
            self._template_timer = self._loop.call_later(TEMPLATE_REFRESH_S, self._template_due)

    def _template_due(self) -> None:
        self._template_timer = None
        if self.is_running:
            self._refresh_template()

    def _refresh_job(self) -> None:
        job = self._choose_job()
        self.metrics.task_assigned.set(1 if job is not None and job.client_task else 0)
        if job != self._job:
            self._job = job
            if self._worker is not None:
                self._worker.wake()

    def _choose_job(self) -> Job | None:
        state = self.chain.state
        for record in sorted(state.tasks.values(), key=lambda r: r.height):
            if record.status != "open" or record.task_id in self._finished:
                continue
            if self.tasks.of(record.task_id).failure:
                continue
            assignment = self._assignment(record)
            index = assignment.worker_index(self.address) if assignment else None
            if assignment is not None and index is not None:
                peers = self._inbox(record, assignment)
                return Job(record.task_id, record.spec, index, record.spec.miners, True, peers)
        bootstrap = bootstrap_task_id(self.params)
        if bootstrap is None or self.params.bootstrap_task is None:
            return None
        return Job(bootstrap, self.params.bootstrap_task, 0, 1, False)

    def _inbox(self, record: TaskRecord, assignment: TaskAssignment) -> PeerUpdates | None:
        """Where the task's peers' updates wait for this node's trainer (None: no peers)."""
        if len(assignment.miners) < 2:
            return None
        inbox = self._inboxes.get(record.task_id)
        screened = record.spec.aggregator != UNSCREENED
        if inbox is None:
            inbox = self._inboxes[record.task_id] = PeerUpdates(
                self.key.public_key,
                [t.public_key for t in assignment.miners],
                _model_size(record.spec.model),
                record.spec.aggregator,
                screen=SenderScreen().screen if screened else None,
                quorum=min(len(assignment.miners), MIN_UPDATES) if screened else 2,
            )
        return inbox

    # -- own work (called on the loop from the mining threads) -----------------------------------

    def _own_block(self, block: Block) -> None:
        try:
            update = self._accept_block(block)
        except InvalidBlock as error:
            self._count_rejection(error.reason)
            log.warning("own block rejected: %s", error)
            self._refresh_template()
            return
        if update.status in (AddStatus.EXTENDED, AddStatus.REORGANIZED, AddStatus.SIDE_BRANCH):
            self.metrics.blocks_mined.inc()
            self.reputation.valid(self.address)
            self._announce(ItemKind.BLOCK, block.hash(), encode_block(block))

    def _own_iteration(self, published: PublishedIteration) -> None:
        job = self._job
        if job is None or not job.client_task:
            return  # bootstrap iterations train nobody's model: not worth the bandwidth
        record = IterationRecord(published.message, published.update, published.signature)
        with contextlib.suppress(MalformedData):
            self.tasks.record_iteration(decode_iteration_message(published.message))
        self._keep_record(record)
        self._unsent_iterations.append(record)
        if len(self._unsent_iterations) >= ITERATION_BATCH_MAX:
            self._flush_iterations()

    def _flush_iterations(self) -> None:
        records, self._unsent_iterations = self._unsent_iterations, []
        if records:
            batch = sign_batch(self.key, IterationBatch(self.key.public_key, tuple(records)))
            self._announce(ItemKind.ITERATION, batch.item_id(), encode_item(batch))

    def _keep_record(self, record: IterationRecord) -> None:
        """Recent IT_RES by message hash: the evidence a verifier attaches to a slash."""
        message_id = sha256(record.message)
        self._records[message_id] = record
        awaited = self._awaiting_evidence.pop(message_id, None)
        if awaited is not None:
            self._slash(*awaited)

    def _training_progress(self, job: Job, trainer: TaskTrainer, stats: MiningStats) -> None:
        self.metrics.iterations.inc()
        self.metrics.task_loss.set(stats.last_loss)
        self.metrics.task_accuracy.set(stats.last_accuracy)

    def _training_failed(self, job: Job, why: str) -> None:
        self.tasks.of(job.task_id).failure = f"training diverged: {why}"
        self._refresh_job()

    def _finished_training(self, done: FinishedTraining) -> None:
        job, trainer = done.job, done.trainer
        self._flush_iterations()
        self._finished.add(job.task_id)
        self._inboxes.pop(job.task_id, None)  # nobody takes from it any more
        final = sign_final_model(
            self.key,
            FinalModel(
                task_id=job.task_id,
                miner=self.key.public_key,
                model_hash=model_hash(trainer.model),
                model=model_to_bytes(trainer.model),
                iterations=trainer.completed_iterations,
            ),
        )
        self._take_final_model(final)
        self._announce(ItemKind.MODEL, final.item_id(), encode_item(final))
        self._refresh_job()

    def _restore_final_models(self) -> None:
        """Final models this node stored for tasks still open: an evaluator restarted before
        its TASK_RESULT was mined evaluates them again instead of leaving the task open."""
        for task_id, record in self.chain.state.tasks.items():
            if record.status != "open":
                continue
            for final in self.tasks.stored_models(task_id):
                if has_valid_signature(final, final.miner):
                    self._take_final_model(final)

    def _take_final_model(self, final: FinalModel) -> None:
        self.tasks.store_model(final)
        screen = self.screens.get(final.task_id)
        if screen is not None:
            self._screened(screen.finish(final.miner))
        self._first_final_model.setdefault(final.task_id, time.monotonic())
        self._maybe_evaluate(final.task_id)

    # -- evaluator -----------------------------------------------------------------------------

    def _maybe_evaluate(self, task_id: bytes) -> None:
        record = self.chain.state.tasks.get(task_id)
        if record is None or record.status != "open":
            self._first_final_model.pop(task_id, None)
            return
        if task_id in self._evaluations:
            return
        assignment = self._assignment(record)
        if assignment is None or not assignment.holds(NodeRole.EVALUATOR, self.address):
            return
        models = self.tasks.of(task_id).final_models
        drawn = [t.owner for t in assignment.miners]
        left_out = self._left_out(record, assignment)
        ranked = [m for m in drawn if m not in left_out] or drawn
        waited = time.monotonic() - self._first_final_model.get(task_id, time.monotonic())
        if not models or (any(m not in models for m in ranked) and waited < EVALUATION_GRACE_S):
            return
        self._evaluations.add(task_id)
        if left_out:
            log.info("task %s: ranking without %s", task_id.hex()[:16], ", ".join(sorted(left_out)))
        candidates = [models[m] for m in ranked if m in models]
        candidates = candidates or [models[m] for m in drawn if m in models]
        self._spawn(self._evaluate(record, assignment, candidates))

    def _left_out(self, record: TaskRecord, assignment: TaskAssignment) -> set[str]:
        """Drawn miners left out of the ranking and its payouts: those slashed since the draw,
        and those this node's screening flagged in most of their rounds."""
        tickets = self.chain.state.tickets
        left_out = {t.owner for t in assignment.miners if t.ticket_id not in tickets}
        screen = self.screens.get(record.task_id)
        if screen is not None:
            left_out |= {address_of(miner) for miner in screen.excluded()}
        return left_out

    async def _evaluate(
        self, record: TaskRecord, assignment: TaskAssignment, candidates: list[FinalModel]
    ) -> None:
        loop = asyncio.get_running_loop()
        scored = await loop.run_in_executor(self._executor, score_models, record, candidates)
        if not scored:
            self.tasks.of(record.task_id).failure = "no final model passed evaluation"
            return
        try:
            self._submit(task_result(record, assignment, scored))
        except InvalidTransaction as error:
            log.warning("task result refused: %s", error)
            self._evaluations.discard(record.task_id)

    # -- verifier ------------------------------------------------------------------------------

    async def _verify(self, block: Block) -> InvalidBlock | None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            await loop.run_in_executor(self._executor, self.verifier.reexecute, block)
        except InvalidBlock as error:
            return error
        finally:
            self.metrics.verification_seconds.observe(time.perf_counter() - started)
        return None

    def _count_rejection(self, reason: str) -> None:
        self.blocks_rejected += 1
        self.metrics.blocks_rejected.labels(reason).inc()

    def _slash(self, block: Block, reason: str) -> None:
        """Report the miner of a block that failed re-execution, with its signed IT_RES (once
        it arrives: a miner announces its block before the batch that carries the IT_RES)."""
        if not self.chain.state.holds_role(self.address, NodeRole.VERIFIER, NodeRole.SUPERVISOR):
            return
        message_id = sha256(block.iteration_message)
        record = self._records.get(message_id)
        if record is None:
            self._awaiting_evidence[message_id] = (block, reason)
            return
        miner = address_of(block.header.miner)
        tickets = [
            t
            for t in self.chain.state.live_tickets(NodeRole.MINER)
            if t.owner == miner and t.ticket_id not in self._reported
        ]
        if not tickets:
            return
        evidence = SlashEvidence(
            ticket_id=tickets[0].ticket_id,
            reason=reason,
            evidence=record.message + sha256(record.update),
            evidence_signature=record.signature,
        )
        try:
            self._submit(evidence)
        except InvalidTransaction as error:
            log.warning("slash of %s refused: %s", miner, error)
            return
        self._reported.add(tickets[0].ticket_id)
        log.info("slashing %s: its block at height %d %s", miner, block.header.height, reason)

    def _count_attack(self, kind: str) -> None:
        self.attacks_detected[kind] += 1
        self.metrics.attacks_detected.labels(kind).inc()

    # -- screening (supervisors, verifiers, evaluators) ----------------------------------------

    def _take_update(self, message: IterationMessage, update: bytes) -> None:
        """A peer's published update: for this node's trainer when it trains the task, and
        for screening when it checks the task."""
        if message.miner == self.key.public_key:
            return
        inbox = self._inboxes.get(message.task_id)
        if inbox is not None:
            inbox.add(message.miner, update)
        screen = self._task_screen(message.task_id)
        record = self.chain.state.tasks.get(message.task_id)
        if screen is None or record is None:
            return
        size = _model_size(record.spec.model)
        try:
            decoded = CompressedUpdate.from_bytes(update, size)
        except ValueError:
            return
        if decoded.size == size:
            self._screened(screen.add(message.miner, message.epoch, decoded.to_dense()))

    def _task_screen(self, task_id: bytes) -> TaskScreen | None:
        if task_id in self.screens:
            return self.screens[task_id]
        record = self.chain.state.tasks.get(task_id)
        assignment = None if record is None else self._assignment(record)
        if record is None or assignment is None or not assignment.miners:
            return None  # not on chain yet, or nobody drawn yet: asked again next time
        checks = any(assignment.holds(role, self.address) for role in SCREENING_ROLES)
        screen = None
        if checks and len(assignment.miners) >= MIN_SCREENED:
            screen = TaskScreen([t.public_key for t in assignment.miners], record.spec.epochs)
        self.screens[task_id] = screen
        return screen

    def _screened(self, rounds: list[ScreenedRound]) -> None:
        """Screened miners gain reputation, flagged ones lose it and count as detections."""
        for result in rounds:
            for miner in result.screened:
                address = address_of(miner)
                if miner in result.flagged:
                    self.reputation.rejected(address)
                    self._count_attack("anomalous_update")
                else:
                    self.reputation.valid(address)
            if result.flagged:
                flagged = ", ".join(address_of(m) for m in result.flagged)
                log.info("round %d: anomalous updates from %s", result.round, flagged)

    # -- the network's handler -----------------------------------------------------------------

    def chain_info(self) -> ChainInfo:
        chain = self.chain
        return ChainInfo(
            chain_id=self.params.chain_id,
            genesis_hash=chain.genesis_hash,
            height=chain.height,
            tip_hash=chain.tip.hash,
            total_work=chain.tip.total_work,
        )

    def has_item(self, kind: ItemKind, item_id: bytes) -> bool:
        if item_id in self._items[kind]:
            return True
        if kind == ItemKind.BLOCK:
            return self.chain.contains(item_id)
        if kind == ItemKind.TX:
            return item_id in self.mempool
        return False

    def get_item(self, kind: ItemKind, item_id: bytes) -> bytes | None:
        cached = self._items[kind].get(item_id)
        if cached is not None:
            return cached
        if kind == ItemKind.BLOCK:
            return self.chain.store.block_bytes(item_id)
        if kind == ItemKind.TX:
            tx = self.mempool.get(item_id)
            return None if tx is None else encode_transaction(tx)
        return None

    def _announce(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        self._remember(kind, item_id, payload)
        if self._network is not None and self.is_running:
            self._spawn(self._network.publish(kind, item_id, payload))

    def _remember(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        if kind == ItemKind.BLOCK:
            return  # the chain store has them
        self._items[kind][item_id] = payload

    async def on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        started = time.perf_counter()
        result = await self._on_item(kind, item_id, payload, peer)
        self.health.record(time.perf_counter() - started, result.verdict != Verdict.REJECTED)
        return result

    async def _on_item(
        self, kind: ItemKind, item_id: bytes, payload: bytes, peer: str
    ) -> ItemResult:
        try:
            if kind == ItemKind.BLOCK:
                return await self._on_block(item_id, payload, peer)
            if kind == ItemKind.TX:
                return self._on_transaction(item_id, payload)
            if kind == ItemKind.ITERATION:
                return self._on_iteration(item_id, payload)
            if kind == ItemKind.MODEL:
                return self._on_final_model(item_id, payload)
            return self._on_verdict(item_id, payload)
        except MalformedData:
            return _rejected("malformed")

    async def _on_block(self, item_id: bytes, payload: bytes, peer: str) -> ItemResult:
        block = decode_block(payload)
        block_hash = block.hash()
        if block_hash != item_id:
            return _rejected("id_mismatch")
        if self.chain.contains(block_hash):
            return ItemResult(Verdict.KNOWN)
        if self.chain.entry(block.header.prev_hash) is None:
            return ItemResult(Verdict.ORPHAN)
        is_verifier = self.role == NodeRole.VERIFIER
        if is_verifier:
            known = self._fake_work.get(block_hash)
            if known is not None:
                return _blame_miner(block, known.reason, peer)
            failure = await self._verify(block)
            if failure is not None:
                result = self._reject_block(block, failure)
                if failure.reason.fake_work:
                    return _blame_miner(block, failure.reason, peer)
                return result
        try:
            update = self._accept_block(block, payload)
        except InvalidBlock as error:
            return self._reject_block(block, error)
        if update.status == AddStatus.ORPHAN:
            return ItemResult(Verdict.ORPHAN)
        if update.status == AddStatus.DUPLICATE:
            return ItemResult(Verdict.KNOWN)
        self.reputation.valid(address_of(block.header.miner))
        if is_verifier:
            self.blocks_verified += 1
            self.metrics.blocks_verified.inc()
            verdict = sign_verdict(self.key, BlockVerdict(block_hash, self.key.public_key, True))
            self._verdicts[block_hash] = verdict
            self._announce(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict))
        return ItemResult(Verdict.ACCEPTED)

    def _reject_block(self, block: Block, error: InvalidBlock) -> ItemResult:
        self._count_rejection(error.reason)
        self.reputation.rejected(address_of(block.header.miner))
        if self.role == NodeRole.VERIFIER:
            verdict = sign_verdict(
                self.key, BlockVerdict(block.hash(), self.key.public_key, False, error.reason)
            )
            self._announce(ItemKind.VERDICT, verdict.item_id(), encode_item(verdict))
            if error.reason.fake_work:
                self._fake_work[block.hash()] = error
                self._count_attack("fake_work")
                self._slash(block, error.reason)
        return _rejected(error.reason)

    def _on_transaction(self, item_id: bytes, payload: bytes) -> ItemResult:
        tx = decode_transaction(payload)
        if tx.txid() != item_id:
            return _rejected("id_mismatch")
        if item_id in self.mempool:
            return ItemResult(Verdict.KNOWN)
        try:
            self._admit(tx, payload)
        except InvalidTransaction as error:
            if error.reason.relay_may_cause:
                return ItemResult(Verdict.KNOWN)
            return _rejected(error.reason)
        self._note_payment(tx)
        self._remember(ItemKind.TX, item_id, payload)
        self._refresh_template_soon()
        return ItemResult(Verdict.ACCEPTED)

    def _on_iteration(self, item_id: bytes, payload: bytes) -> ItemResult:
        batch = decode_item(IterationBatch, payload)
        if batch.item_id() != item_id:
            return _rejected("id_mismatch")
        if item_id in self._items[ItemKind.ITERATION]:
            return ItemResult(Verdict.KNOWN)
        if not has_valid_signature(batch, batch.miner):
            return _rejected("bad_signature")
        for record in batch.records:
            message = decode_iteration_message(record.message)
            if message.miner != batch.miner:
                return _rejected("foreign_iteration")
            self._keep_record(record)
            if message.task_id not in self.chain.state.tasks:
                continue  # relayed, but no progress is kept for a task not (yet) on chain
            self.tasks.record_iteration(message)
            self._take_update(message, record.update)
            if self.role == NodeRole.SUPERVISOR:
                self._journal(message.task_id, encode_item(record))
        self._remember(ItemKind.ITERATION, item_id, payload)
        return ItemResult(Verdict.ACCEPTED)

    def _journal(self, task_id: bytes, payload: bytes) -> None:
        """Supervisors keep every IT_RES of a task: length-prefixed records, append-only."""
        path = self.config.data_dir / "iterations" / f"{task_id.hex()}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as journal:
            journal.write(len(payload).to_bytes(4, "big") + payload)

    def _on_final_model(self, item_id: bytes, payload: bytes) -> ItemResult:
        final = decode_item(FinalModel, payload)
        if final.item_id() != item_id:
            return _rejected("id_mismatch")
        if item_id in self._items[ItemKind.MODEL]:
            return ItemResult(Verdict.KNOWN)
        if not has_valid_signature(final, final.miner):
            return _rejected("bad_signature")
        if final.task_id not in self.chain.state.tasks:
            return _rejected("unknown_task")
        self._remember(ItemKind.MODEL, item_id, payload)
        self._take_final_model(final)
        return ItemResult(Verdict.ACCEPTED)

    def _on_verdict(self, item_id: bytes, payload: bytes) -> ItemResult:
        verdict = decode_item(BlockVerdict, payload)
        if verdict.item_id() != item_id:
            return _rejected("id_mismatch")
        if item_id in self._items[ItemKind.VERDICT]:
            return ItemResult(Verdict.KNOWN)
        if not has_valid_signature(verdict, verdict.verifier):
            return _rejected("bad_signature")
        self._verdicts[verdict.block_hash] = verdict
        self._remember(ItemKind.VERDICT, item_id, payload)
        return ItemResult(Verdict.ACCEPTED)

    def block_locator(self) -> list[bytes]:
        return block_locator(self.chain)

    def blocks_after(self, locator: list[bytes], limit: int) -> list[bytes]:
        return blocks_after(self.chain, locator, limit)

    async def on_sync_blocks(self, blocks: list[bytes], peer: str) -> ItemResult:
        """Import a batch in order. Verifiers re-execute these too: every block they pass on
        has been re-run, however it reached them."""
        if self.role == NodeRole.VERIFIER:
            return await self._import_synced(blocks, peer)
        with self.chain.batch():
            return await self._import_synced(blocks, peer)

    async def _import_synced(self, blocks: list[bytes], peer: str) -> ItemResult:
        for encoded in blocks:
            try:
                block = decode_block(encoded)
            except MalformedData:
                return _rejected("malformed")
            if self.chain.contains(block.hash()):
                continue
            if self.role == NodeRole.VERIFIER:
                result = await self._on_block(block.hash(), encoded, peer)
                if result.verdict in (Verdict.REJECTED, Verdict.ORPHAN):
                    return result
                continue
            try:
                update = self._accept_block(block, encoded)
            except InvalidBlock as error:
                self._count_rejection(error.reason)
                return _rejected(error.reason)
            if update.status == AddStatus.ORPHAN:
                return ItemResult(Verdict.ORPHAN)
        return ItemResult(Verdict.ACCEPTED)


@functools.cache
def _model_size(spec: ModelSpec) -> int:
    return parameter_count(build_model(spec, seed=b""))


def _blame_miner(block: Block, reason: str, peer: str) -> ItemResult:
    """A block whose re-execution failed: a peer that relays it cannot have known (only
    verifiers re-execute), so only the block's own miner is blamed by the network (and slashed
    on chain); for a relay the block is simply known."""
    if peer == block.header.miner.hex():
        return _rejected(reason)
    return ItemResult(Verdict.KNOWN)


def _rejected(reason: str) -> ItemResult:
    return ItemResult(Verdict.REJECTED, reason or "malformed")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _chain_order(view: TaskView) -> tuple[bool, int]:
    """Tasks on chain by height, then those still in the mempool."""
    return (view.created_height is None, view.created_height or 0)


def _network_key(secret: str | None) -> bytes | None:
    return None if secret is None else sha256(b"pouw-network-secret:" + secret.encode())
