"""The miner role: train the client task this node was drawn for (else the chain's bootstrap
task) in the mining worker's threads, so that training iterations mine blocks; publish its
iterations (IT_RES, in signed batches) and its final model; take its peers' updates into the
trainer.

The node's loop decides the job (on every chain change); the worker's threads hand blocks,
iterations and finished training back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

from pouw.blockchain.block import Block, encode_block
from pouw.blockchain.chain import AddStatus
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.state import Position
from pouw.budgets import final_model_bytes
from pouw.crypto import ZERO_HASH
from pouw.economics.schedule import training_order
from pouw.economics.selection import TaskAssignment
from pouw.errors import InvalidBlock, MalformedData
from pouw.mining.checkpoint import TrainerCheckpoints
from pouw.mining.miner import Miner, MiningStats, PublishedIteration
from pouw.mining.peers import PeerUpdates
from pouw.mining.segments import position, segment_start
from pouw.mining.trainer import TaskTrainer
from pouw.ml.aggregation import UNSCREENED
from pouw.ml.datasets import load_dataset
from pouw.ml.models import model_hash, model_to_bytes
from pouw.network.messages import ItemKind
from pouw.node.announcer import Announcer
from pouw.node.backlog import MiningHold
from pouw.node.byzantine import ByzantineMiner
from pouw.node.context import NodeContext
from pouw.node.intake import take_final_model
from pouw.node.items import (
    FinalModel,
    IterationBatch,
    IterationRecord,
    encode_item,
    sign_batch,
    sign_final_model,
)
from pouw.node.ledger import Ledger
from pouw.node.training_failures import FILE_NAME, TrainingFailures, leave_task
from pouw.node.worker import FinishedTraining, Job, MiningWorker, failure_kind
from pouw.roles import NodeRole
from pouw.security import Defence
from pouw.security.detection import MIN_UPDATES
from pouw.spec import model_parameters

log = logging.getLogger("pouw.node")

ITERATION_BATCH_MAX = 1024
FINAL_MODEL_REANNOUNCE_TICKS = 20
"""How often (in node ticks, 10 s) a miner offers its final models of open tasks again: a peer
that was down or behind when they were first announced, an evaluator among them, gets them."""
"""IT_RES records sent at once at most; else they go every tick (ITERATION_FLUSH_S)."""


@dataclass(frozen=True)
class Claim:
    """What the current job's iterations may claim on the main chain (`pouw.mining.claims`),
    taken on the loop at each chain change and read by the training thread."""

    task_id: bytes
    ticket_id: bytes
    last: Position | None

    def ticket_for(self, trainer: TaskTrainer) -> bytes | None:
        if trainer.task_id != self.task_id or trainer.segment is None:
            return None
        last = self.last
        if last is None:
            return self.ticket_id
        if position(trainer.epoch, trainer.iteration) <= last.last:
            return None  # sealed already: a restarted miner catching up with itself
        segment = position(
            trainer.epoch, segment_start(trainer.iteration, trainer.checkpoint_interval)
        )
        if segment == last.segment and trainer.segment.checkpoint_hash != last.checkpoint_hash:
            return None  # this segment committed to another checkpoint before a restart
        return self.ticket_id


@dataclass(frozen=True)
class Activity:
    """What the miner is doing, as the node's status says it."""

    mining: bool
    job: Job | None

    def describe(self) -> str:
        if not self.mining:
            return "not mining"
        if self.job is None:
            return "idle: no task to train, so nothing to mine with"
        if self.job.client_task:
            return f"training task {self.job.task_id.hex()[:16]}"
        return "training the bootstrap task"


class MinerRole:
    def __init__(
        self,
        context: NodeContext,
        ledger: Ledger,
        announcer: Announcer,
        hold: MiningHold | None = None,
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.announcer = announcer
        self.hold = hold
        """Validation and relay before training (pouw.node.backlog); None: never held."""
        self._stopping = threading.Event()
        self.stats = MiningStats()
        self.job: Job | None = None
        self._worker: MiningWorker | None = None
        self._finished: set[bytes] = set()
        self._inboxes: dict[bytes, PeerUpdates] = {}
        self._unsent: list[IterationRecord] = []
        self._claim: Claim | None = None
        self._failures = TrainingFailures(context.config.data_dir / FILE_NAME)
        for task_id, why in self._failures.reasons().items():
            context.tasks.of(task_id).failure = why  # failed here before a restart: left
        events = context.events
        events.chain_changed.subscribe(lambda _: self.refresh_job())
        events.chain_changed.subscribe(lambda _: self._leave_failed_tasks())
        events.peer_iteration.subscribe(self._take_update)
        events.tick.subscribe(lambda _: self.flush_iterations())
        events.tick.subscribe(self._reannounce_final_models)
        events.final_model.subscribe(self._own_final_model)

    def _own_final_model(self, final: FinalModel) -> None:
        """A final model of ours (restored after a restart): the task is never trained again,
        since a second, different final model for it is slashing evidence."""
        if final.miner == self.context.key.public_key and final.task_id not in self._finished:
            self._finished.add(final.task_id)
            self.refresh_job()

    def _reannounce_final_models(self, tick: int) -> None:
        """Offer our final models of open tasks again; peers that hold one are not sent it."""
        if tick % FINAL_MODEL_REANNOUNCE_TICKS:
            return
        tasks, book = self.ledger.chain.state.tasks, self.context.tasks
        for task_id in self._finished:
            record = tasks.get(task_id)
            kept = book.of(task_id).final_models.get(self.context.address)
            final = book.with_bytes(kept) if kept and record and record.status == "open" else None
            if final is not None:
                self.announcer.announce(ItemKind.MODEL, final.item_id(), encode_item(final))

    @property
    def activity(self) -> Activity:
        return Activity(self.running, self.job)

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.running

    async def start(self) -> None:
        if self.running:
            return
        context, background = self.context, self.context.background
        self._stopping.clear()
        miner = Miner(
            context.key,
            context.params,
            self._template,
            on_block=lambda block: background.call_soon(self.on_block, block),
            on_iteration=lambda published: background.call_soon(self.on_iteration, published),
            intensity=context.config.mining_intensity,
            device_class=context.config.device,
            tampering=self._tampering(),
            entitlement=self._entitlement,
        )
        self.stats = miner.stats
        self._forget_closed_failures()
        datasets = context.datasets
        self._worker = MiningWorker(
            miner,
            context.key.public_key,
            lambda: self.job,
            on_finished=lambda done: background.call_soon(self.on_finished, done),
            on_progress=self._training_progress,
            on_failed=lambda job, why: background.call_soon(self.on_failed, job, why),
            checkpoints=self._trainer_checkpoints(),
            sealed_up_to=self._sealed_up_to,
            datasets=lambda spec: load_dataset(spec, datasets),
        )
        self.refresh_job()
        self._worker.start()

    async def stop(self) -> None:
        self._stopping.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    def _tampering(self) -> ByzantineMiner | None:
        attack = self.context.config.attack
        if attack is None:
            return None
        log.warning("node %s is a Byzantine miner (%s): devnet demo", self.context.node_id, attack)
        bootstrap = bootstrap_task_id(self.context.params)
        return ByzantineMiner(attack, lambda task: task != bootstrap, self.context.key.public_key)

    def _forget_closed_failures(self) -> None:
        tasks = self.ledger.chain.state.tasks
        self._failures.keep_only(t for t, record in tasks.items() if record.status == "open")

    def _trainer_checkpoints(self) -> TrainerCheckpoints:
        """This node's saved trainers, less those of tasks no longer open."""
        checkpoints = TrainerCheckpoints(self.context.config.data_dir / "trainers")
        tasks = self.ledger.chain.state.tasks
        checkpoints.keep_only(t for t, record in tasks.items() if record.status == "open")
        return checkpoints

    # -- the job -----------------------------------------------------------------------------------

    def _sealed_up_to(self, job: Job) -> int | None:
        claim = self._claim if self._claim is not None else self._claim_for(job)
        if claim is None or claim.task_id != job.task_id or claim.last is None:
            return None
        return claim.last.last

    def _entitlement(self, trainer: TaskTrainer) -> bytes | None:
        claim = self._claim
        return None if claim is None else claim.ticket_for(trainer)

    def _claim_for(self, job: Job | None) -> Claim | None:
        if job is None:
            return None
        state, me = self.ledger.chain.state, self.context.key.public_key
        ticket_id: bytes | None = None
        if job.client_task:
            record = state.tasks.get(job.task_id)
            seats = record.drawn.miners if record is not None and record.drawn else ()
            if job.worker_index < len(seats) and seats[job.worker_index].public_key == me:
                ticket_id = seats[job.worker_index].ticket_id
            if ticket_id is None or ticket_id not in state.tickets:
                return None
        else:
            miners = [t for t in list(state.tickets.values()) if t.role == NodeRole.MINER]
            mine = sorted(t.ticket_id for t in miners if t.public_key == me)
            if mine:
                ticket_id = mine[0]
            elif not miners:
                ticket_id = ZERO_HASH
            else:
                return None
        key = job.task_id + (me if ticket_id == ZERO_HASH else ticket_id)
        return Claim(job.task_id, ticket_id, state.positions.get(key))

    def refresh_job(self) -> None:
        job = self._choose_job()
        self._claim = self._claim_for(job)
        self.context.metrics.task_assigned.set(1 if job is not None and job.client_task else 0)
        if job != self.job:
            self.job = job
            if self._worker is not None:
                self._worker.wake()

    def _choose_job(self) -> Job | None:
        """The open client task this node was drawn for that pays best for its work
        (`pouw.economics.schedule`), else the bootstrap task."""
        state, tasks = self.ledger.chain.state, self.context.tasks
        open_tasks = [record for record in state.tasks.values() if record.status == "open"]
        for record in training_order(open_tasks):
            if record.task_id in self._finished:
                continue
            if tasks.of(record.task_id).failure:
                continue
            assignment = self.ledger.draw(record)
            index = assignment.worker_index(self.context.address) if assignment else None
            if assignment is not None and index is not None:
                peers = self._inbox(record, assignment)
                return Job(record.task_id, record.spec, index, record.spec.miners, True, peers)
        params = self.context.params
        bootstrap = bootstrap_task_id(params)
        if bootstrap is None or params.bootstrap_task is None:
            return None
        return Job(bootstrap, params.bootstrap_task, 0, 1, False)

    def _inbox(self, record: TaskRecord, assignment: TaskAssignment) -> PeerUpdates | None:
        """Where the task's peers' updates wait for this node's trainer (None: no peers)."""
        if len(assignment.miners) < 2:
            return None
        inbox = self._inboxes.get(record.task_id)
        screened = record.spec.aggregator != UNSCREENED
        if inbox is None:
            size, miners = model_parameters(record.spec.model), len(assignment.miners)
            defence = Defence.for_task(size, miners, record.spec.aggregator)
            inbox = self._inboxes[record.task_id] = PeerUpdates(
                self.context.key.public_key,
                [t.public_key for t in assignment.miners],
                size,
                defence=defence if screened else None,
                quorum=min(miners, MIN_UPDATES) if screened else 2,
            )
        return inbox

    def _take_update(self, message: IterationMessage, record: IterationRecord) -> None:
        """A peer's published update, for this node's trainer when it trains the task."""
        inbox = self._inboxes.get(message.task_id)
        if inbox is not None and message.miner != self.context.key.public_key:
            inbox.add(message.miner, record.update)

    # -- what the mining threads hand back (called on the loop) ----------------------------------

    def on_block(self, block: Block) -> None:
        context = self.context
        if context.config.attack is None:  # an honest miner's block is what it computed
            self.ledger.seal.vouch(block)
        try:
            update = self.ledger.accept_block(block)
        except InvalidBlock as error:
            context.counters.rejected(error.reason)
            log.warning("own block rejected: %s", error)
            self.ledger.refresh_template()
            if context.config.attack == "fake_work":
                # Its forged blocks are the attack: published anyway, to be caught. Other
                # attackers' blocks are honest work, dropped like an honest miner's when a
                # race made them invalid (a block on a stale template, say).
                self.announcer.announce(ItemKind.BLOCK, block.hash(), encode_block(block))
            return
        if update.status in (AddStatus.EXTENDED, AddStatus.REORGANIZED, AddStatus.SIDE_BRANCH):
            context.metrics.blocks_mined.inc()
            context.reputation.valid(context.address)
            self.announcer.announce(ItemKind.BLOCK, block.hash(), encode_block(block))

    def on_iteration(self, published: PublishedIteration) -> None:
        job = self.job
        if job is None or not job.client_task:
            return  # bootstrap iterations train nobody's model: not worth the bandwidth
        record = IterationRecord(published.message, published.update, published.signature)
        with contextlib.suppress(MalformedData):
            self.context.tasks.record_iteration(decode_iteration_message(published.message))
        self.context.events.iteration_record.emit(record)
        self._unsent.append(record)
        if len(self._unsent) >= ITERATION_BATCH_MAX:
            self.flush_iterations()

    def flush_iterations(self) -> None:
        records, self._unsent = self._unsent, []
        if records:
            key = self.context.key
            batch = sign_batch(
                key, self.context.params.chain_id, IterationBatch(key.public_key, tuple(records))
            )
            self.announcer.announce(ItemKind.ITERATION, batch.item_id(), encode_item(batch))

    def _template(self) -> Block | None:
        """The block to draw nonces on (training thread): none while the node is held."""
        if self.hold is not None and self.hold.hold_nonces():
            return None
        return self.ledger.template

    def _training_progress(self, job: Job, trainer: TaskTrainer, stats: MiningStats) -> None:
        """After each iteration (training thread); waits while the node is held."""
        metrics = self.context.metrics
        metrics.iterations.inc()
        metrics.task_loss.set(stats.last_loss)
        metrics.task_accuracy.set(stats.last_accuracy)
        if self.hold is not None:
            self.hold.pause_training(self._stopping)

    def on_failed(self, job: Job, why: str) -> None:
        """The job's training failed (its spec, its dataset or its numbers): the task shows
        `failed` with why, and this node does not pick it again, also after a restart."""
        self.context.tasks.of(job.task_id).failure = why
        if job.client_task:
            self._failures.record(job.task_id, why)
            self.context.metrics.training_failures.labels(failure_kind(why)).inc()
            leave_task(self.ledger, self.context.key, job.task_id, why)
        self.refresh_job()

    def _leave_failed_tasks(self) -> None:
        """Withdraw again from the tasks that failed here while a withdrawal is neither on
        chain nor pending (lost in a crash, or dropped from the mempool)."""
        for task_id, why in self._failures.reasons().items():
            leave_task(self.ledger, self.context.key, task_id, why)

    def on_finished(self, done: FinishedTraining) -> None:
        job, trainer, key = done.job, done.trainer, self.context.key
        self.flush_iterations()
        self._finished.add(job.task_id)
        self._inboxes.pop(job.task_id, None)  # nobody takes from it any more
        final = sign_final_model(
            key,
            self.context.params.chain_id,
            FinalModel(
                task_id=job.task_id,
                miner=key.public_key,
                model_hash=model_hash(trainer.model),
                model=model_to_bytes(trainer.model),
                iterations=trainer.completed_iterations,
            ),
        )
        refused = take_final_model(self.context, final, final_model_bytes(job.spec.model))
        if refused is not None:
            log.warning("own final model of task %s not kept here: %s", job.task_id.hex(), refused)
        self.announcer.announce(ItemKind.MODEL, final.item_id(), encode_item(final))
        self.refresh_job()
