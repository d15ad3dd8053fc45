"""A whole devnet on one machine: the project's main job (`pouw devnet`, `make demo`).

One node in one process plays client, miner, verifier and evaluator; the multi-process
network replaces this once peers gossip over ZeroMQ. Nothing is simulated: the client's
PAY_FOR_TASK is mined by training the chain's bootstrap task, the client's task is then
trained while mining, a verifier re-executes every block, and the evaluator's TASK_RESULT
closes the task on chain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pouw.blockchain.block import Block
from pouw.blockchain.chain import AddStatus, Chain
from pouw.blockchain.errors import InvalidBlock
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.params import ChainParams, bootstrap_task_id, devnet_key, devnet_params
from pouw.blockchain.store import ChainStore
from pouw.blockchain.task_spec import DatasetSpec, ModelSpec, TaskSpec
from pouw.blockchain.transactions import (
    BuyTicket,
    PayForTask,
    Payload,
    Payout,
    RankedModel,
    TaskResult,
    Transaction,
    coins,
    sign_transaction,
)
from pouw.crypto import KeyPair
from pouw.mining.miner import Miner, MiningStats
from pouw.mining.trainer import TaskTrainer
from pouw.mining.verify import BlockVerifier
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import configure_determinism, evaluate
from pouw.ml.models import model_hash
from pouw.roles import NodeRole

BUILTIN_TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(
        model=ModelSpec(layers=(64, 128, 64, 10)),
        dataset=DatasetSpec(name="digits"),
        batch_size=32,
        learning_rate=0.05,
        epochs=20,
        tau=1e-3,
        min_accuracy=0.9,
        miners=1,
    ),
    "iris": TaskSpec(
        model=ModelSpec(layers=(4, 16, 3)),
        dataset=DatasetSpec(name="iris"),
        batch_size=16,
        learning_rate=0.1,
        epochs=60,
        tau=1e-3,
        min_accuracy=0.85,
        miners=1,
    ),
    "wine": TaskSpec(
        model=ModelSpec(layers=(13, 32, 3)),
        dataset=DatasetSpec(name="wine"),
        batch_size=16,
        learning_rate=0.1,
        epochs=40,
        tau=1e-3,
        min_accuracy=0.85,
        miners=1,
    ),
    "breast_cancer": TaskSpec(
        model=ModelSpec(layers=(30, 32, 2)),
        dataset=DatasetSpec(name="breast_cancer"),
        batch_size=32,
        learning_rate=0.05,
        epochs=20,
        tau=1e-3,
        min_accuracy=0.9,
        miners=1,
    ),
}


@dataclass
class DevnetProgress:
    phase: str = "starting"
    task_epoch: int = 0
    task_epochs: int = 0
    iterations: int = 0
    total_iterations: int = 0
    loss: float = float("nan")
    batch_accuracy: float = float("nan")
    height: int = 0
    blocks_verified: int = 0
    blocks_rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DevnetResult:
    task_id: str
    task_state: str
    test_accuracy: float
    min_accuracy: float
    height: int
    blocks_verified: int
    blocks_rejected: int
    nodes: int
    iterations: int
    seconds: float
    rewards_earned: float
    data_dir: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SingleNodeDevnet:
    def __init__(self, data_dir: Path, task: TaskSpec, params: ChainParams | None = None) -> None:
        configure_determinism()
        self.task = task
        self.params = params or devnet_params(block_time_ms=1_000, initial_difficulty=64)
        self.client, self.miner_key, self.evaluator = (
            devnet_key("client"),
            devnet_key("miner"),
            devnet_key("evaluator"),
        )
        self.chain = Chain(ChainStore(data_dir), self.params)
        self.verifier = BlockVerifier(self.params, self._task_spec)
        self.chain.seal_rules = (self.verifier,)
        self.mempool = Mempool()
        self.progress = DevnetProgress(height=self.chain.height)
        self._template: Block | None = None
        self.data_dir = data_dir

    def _task_spec(self, task_id: bytes) -> TaskSpec | None:
        record = self.chain.state.tasks.get(task_id)
        return None if record is None or record.status != "open" else record.spec

    # -- the node's block pipeline ----------------------------------------------------------

    def _refresh_template(self) -> None:
        state, height = self.chain.state, self.chain.height + 1
        body = self.mempool.select(state, self.params.max_block_bytes // 2, height)
        self._template = self.chain.assemble_block(
            self.miner_key.public_key, self.miner_key.address, body
        )

    def _on_block(self, block: Block) -> None:
        """A found block: the verifier re-executes it, then the chain takes it."""
        progress = self.progress
        try:
            self.verifier.reexecute(block)
            update = self.chain.add_block(block)
        except InvalidBlock as error:
            progress.blocks_rejected += 1
            progress.rejected_reasons[error.reason] = (
                progress.rejected_reasons.get(error.reason, 0) + 1
            )
        else:
            if update.status in (AddStatus.EXTENDED, AddStatus.REORGANIZED):
                progress.blocks_verified += 1
                self.mempool.remove_confirmed(update.connected, self.chain.state)
        progress.height = self.chain.height
        self._refresh_template()

    def submit(self, key: KeyPair, payload: Payload, fee: int = 1_000) -> Transaction:
        pending = sum(1 for tx in self.mempool.transactions() if tx.sender == key.public_key)
        nonce = self.chain.state.account(key.address).nonce + pending
        tx = sign_transaction(key, payload, nonce=nonce, fee=fee, chain_id=self.params.chain_id)
        self.mempool.add(tx, self.chain.state)
        self._refresh_template()
        return tx

    # -- phases -----------------------------------------------------------------------------

    def _train(
        self,
        trainer: TaskTrainer,
        until: Callable[[], bool],
        stop: threading.Event,
        *,
        client_task: bool = False,
    ) -> MiningStats:
        miner = Miner(self.miner_key, self.params, lambda: self._template, on_block=self._on_block)
        progress = self.progress

        def observe(stats: MiningStats) -> None:
            if client_task:
                progress.iterations = trainer.completed_iterations
                progress.total_iterations = trainer.total_iterations
                progress.task_epoch = trainer.epoch
                progress.loss, progress.batch_accuracy = stats.last_loss, stats.last_accuracy
            if until():
                stop.set()

        self._refresh_template()
        return miner.train(trainer, stop=stop, progress=observe)

    def _mine_until_confirmed(self, txids: set[bytes]) -> None:
        """Mine by training the bootstrap task until the transactions are on chain."""
        task_id = bootstrap_task_id(self.params)
        assert task_id is not None and self.params.bootstrap_task is not None
        spec = self.params.bootstrap_task
        trainer = TaskTrainer(task_id, spec, load_dataset(spec.dataset), self.miner_key.public_key)

        def confirmed() -> bool:
            return not any(txid in self.mempool for txid in txids)

        self._train(trainer, confirmed, threading.Event())

    def run(self, stop: threading.Event | None = None) -> DevnetResult:
        stop = stop or threading.Event()
        started = time.monotonic()
        progress = self.progress
        progress.phase = "client pays for the task"
        pay = self.submit(self.client, PayForTask(spec=self.task, reward=coins(100)))
        ticket = self.submit(self.evaluator, BuyTicket(role=NodeRole.EVALUATOR, amount=coins(10)))
        stake = self.submit(self.miner_key, BuyTicket(role=NodeRole.MINER, amount=coins(10)))
        self._mine_until_confirmed({pay.txid(), ticket.txid(), stake.txid()})

        task_id = pay.txid()
        progress.phase = "training the client's task"
        progress.task_epochs = self.task.epochs
        dataset = load_dataset(self.task.dataset)
        trainer = TaskTrainer(task_id, self.task, dataset, self.miner_key.public_key)
        self._train(trainer, stop.is_set, stop, client_task=True)

        progress.phase = "evaluating on the withheld test set"
        accuracy = evaluate(trainer.model, dataset.x_test, dataset.y_test)
        state = "failed"
        if trainer.finished:
            ranking = (RankedModel(self.miner_key.address, model_hash(trainer.model), accuracy),)
            payouts = (Payout(self.miner_key.address, coins(100)),)
            result = self.submit(self.evaluator, TaskResult(task_id, ranking, payouts))
            progress.phase = "closing the task on chain"
            self._mine_until_confirmed({result.txid()})
            record = self.chain.state.tasks[task_id]
            state = record.status if accuracy >= self.task.min_accuracy else "below_min_accuracy"
        progress.phase = "done"
        miner_balance = self.chain.state.balance(self.miner_key.address)
        genesis_balance = next(
            a.amount for a in self.params.allocations if a.recipient == self.miner_key.address
        )
        self.chain.store.close()
        return DevnetResult(
            task_id=task_id.hex(),
            task_state=state,
            test_accuracy=round(accuracy, 4),
            min_accuracy=self.task.min_accuracy,
            height=self.chain.height,
            blocks_verified=progress.blocks_verified,
            blocks_rejected=progress.blocks_rejected,
            nodes=1,
            iterations=trainer.completed_iterations,
            seconds=round(time.monotonic() - started, 1),
            rewards_earned=round((miner_balance + coins(10) - genesis_balance) / coins(1), 3),
            data_dir=str(self.data_dir),
        )


def task_from_name(name: str) -> TaskSpec:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    import yaml

    from pouw.blockchain.task_spec import task_spec_from_mapping

    with open(name, encoding="utf-8") as file:
        return task_spec_from_mapping(yaml.safe_load(file))


def with_epochs(spec: TaskSpec, epochs: int | None) -> TaskSpec:
    return spec if epochs is None else msgspec.structs.replace(spec, epochs=epochs)
