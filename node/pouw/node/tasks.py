"""What a node knows of each task beyond the chain: miners' progress (from their gossiped
iteration messages), final models (kept on disk as safetensors, each with its signed
FinalModel item beside it, so that an evaluator restarted before its TASK_RESULT is mined still
has them), and blocks mined with it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pouw.blockchain.iteration_message import IterationMessage
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.transactions import COIN, PayForTask, Transaction
from pouw.budgets import (
    FINAL_MODEL_BYTES_PER_SENDER,
    FINAL_MODEL_BYTES_TOTAL,
    LARGEST_FINAL_MODEL_BYTES,
    PROGRESS_MINERS_PER_TASK,
    ByteBudget,
)
from pouw.crypto import address_of
from pouw.economics.selection import TaskAssignment
from pouw.errors import MalformedData, Reason
from pouw.node.items import FinalModel, decode_item, encode_item
from pouw.node.views import MinerProgress, TaskPhase, TaskView

FINAL_MODEL_ITEM = ".final"
"""Suffix of a stored FinalModel item, its model bytes left out (they are the .safetensors)."""


@dataclass
class _MinerState:
    epoch: int = 0
    iterations: int = 0
    loss: float = math.nan
    accuracy: float = math.nan
    finished: bool = False


@dataclass
class TaskProgress:
    miners: dict[str, _MinerState] = field(default_factory=dict)
    blocks: int = 0
    final_models: dict[str, FinalModel] = field(default_factory=dict)
    """Each miner's final model, its item only: the bytes are on disk (`TaskBook.with_bytes`)."""
    failure: str = ""
    """Why the task cannot complete, when it cannot."""
    evaluating: bool = False
    """This node's evaluator is scoring the final models, or sent its result."""


class TaskBook:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.model_budget: ByteBudget[str, tuple[bytes, str]] = ByteBudget(
            FINAL_MODEL_BYTES_PER_SENDER, FINAL_MODEL_BYTES_TOTAL
        )
        """Final models' bytes by miner, each (task, miner) one model: what is held in memory
        and the same bytes on disk."""
        self.progress: dict[bytes, TaskProgress] = {}
        self.pending: dict[bytes, tuple[str, float]] = {}
        """Paid-for tasks not yet on chain: task id -> (client address, reward in coins)."""

    def of(self, task_id: bytes) -> TaskProgress:
        return self.progress.setdefault(task_id, TaskProgress())

    def record_iteration(self, message: IterationMessage) -> None:
        miners, address = self.of(message.task_id).miners, address_of(message.miner)
        if address not in miners and len(miners) >= PROGRESS_MINERS_PER_TASK:
            return
        state = miners.setdefault(address, _MinerState())
        state.epoch = max(state.epoch, message.epoch)
        state.iterations += 1
        state.loss = message.loss
        state.accuracy = message.correct / message.samples

    def note_payment(self, tx: Transaction) -> None:
        """A task payment waiting in the mempool shows as a pending task."""
        if isinstance(tx.payload, PayForTask):
            self.pending[tx.txid()] = (tx.sender_address, tx.payload.reward / COIN)

    def record_block(self, task_id: bytes, delta: int = 1) -> None:
        self.of(task_id).blocks += delta

    def store_model(
        self, model: FinalModel, largest: int = LARGEST_FINAL_MODEL_BYTES
    ) -> Reason | None:
        """Keep a miner's final model on disk (in place of its earlier one for the task) and
        its item in memory; or say why not and keep nothing: larger than `largest` (what its
        task's spec implies), or past the byte budget."""
        if len(model.model) > largest:
            return Reason.MODEL_TOO_LARGE
        progress = self.of(model.task_id)
        miner = address_of(model.miner)
        kept = msgspec.structs.replace(model, model=b"")
        item = encode_item(kept)
        refused = self.model_budget.charge(
            (model.task_id, miner), miner, len(model.model) + len(item)
        )
        if refused is not None:
            return refused
        earlier = progress.final_models.get(miner)
        if earlier is not None and earlier.model_hash != model.model_hash:
            self._delete_model(earlier)
        progress.final_models[miner] = kept
        progress.miners.setdefault(miner, _MinerState()).finished = True
        path = self.model_path(model.task_id, model.model_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, model.model)
        # After the model: an item on disk means its model is there too.
        _write_atomically(path.with_suffix(FINAL_MODEL_ITEM), item)
        return None

    def with_bytes(self, model: FinalModel) -> FinalModel | None:
        """A kept final model with its bytes read back from disk (None if they are gone)."""
        data = self.model_bytes(model.task_id, model.model_hash)
        return None if data is None else msgspec.structs.replace(model, model=data)

    def holding(self) -> list[bytes]:
        """The tasks whose final models are held (in memory and the budget)."""
        return [task_id for task_id, progress in self.progress.items() if progress.final_models]

    def settle(self, task_id: bytes, ranked: set[bytes]) -> None:
        """The task left `open` on the main chain: its final models leave memory and the
        budget, and those its result did not rank leave the disk (the ranked stay: the API
        serves the best; a refunded task ranks none)."""
        progress = self.of(task_id)
        for miner, model in progress.final_models.items():
            self.model_budget.release((task_id, miner))
            if model.model_hash not in ranked:
                self._delete_model(model)
        progress.final_models.clear()

    def _delete_model(self, model: FinalModel) -> None:
        path = self.model_path(model.task_id, model.model_hash)
        path.with_suffix(FINAL_MODEL_ITEM).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def stored_tasks(self) -> list[bytes]:
        """The tasks with final models stored on disk."""
        if not self.models_dir.is_dir():
            return []
        return [
            bytes.fromhex(path.name)
            for path in sorted(self.models_dir.iterdir())
            if path.is_dir() and len(path.name) == 64
        ]

    def stored_models(self, task_id: bytes) -> list[FinalModel]:
        """The final models of `task_id` stored here, as received (signatures unchecked)."""
        models = []
        for item_path in sorted((self.models_dir / task_id.hex()).glob(f"*{FINAL_MODEL_ITEM}")):
            try:
                item = decode_item(FinalModel, item_path.read_bytes())
                model = item_path.with_suffix(".safetensors").read_bytes()
            except (OSError, MalformedData):
                continue
            models.append(msgspec.structs.replace(item, model=model))
        return models

    def model_path(self, task_id: bytes, model_hash: bytes) -> Path:
        """Where the model is kept as safetensors."""
        return self.models_dir / task_id.hex() / f"{model_hash.hex()}.safetensors"

    def model_bytes(self, task_id: bytes, model_hash: bytes) -> bytes | None:
        path = self.model_path(task_id, model_hash)
        return path.read_bytes() if path.exists() else None

    def view(
        self, record: TaskRecord, assignment: TaskAssignment | None, *, evaluating: bool
    ) -> TaskView:
        progress = self.of(record.task_id)
        phase: TaskPhase
        test_accuracy: float | None = None
        best: bytes | None = None
        ranked: list[str] = []
        message = progress.failure
        if record.status == "completed" and record.result is not None:
            ranking = record.result.ranking
            ranked = [entry.miner for entry in ranking]
            best = ranking[0].model_hash if ranking else None
            test_accuracy = ranking[0].accuracy if ranking else None
            below = test_accuracy is not None and test_accuracy < record.spec.min_accuracy
            phase = "failed" if below else "completed"
            if below:
                message = (
                    f"best test accuracy {test_accuracy:.4f} is below the task's "
                    f"min_accuracy {record.spec.min_accuracy}"
                )
        elif record.status == "refunded":
            phase = "refunded"
            message = _refund_message(record)
        elif progress.failure:
            phase = "failed"
        elif evaluating:
            phase = "evaluating"
        elif assignment is None or not assignment.miners:
            phase = "pending"
            message = message or "waiting for miner tickets"
        else:
            phase = "training"
            message = "; ".join(f"{w.miner} left: {w.reason}" for w in record.withdrawals)
        miners = [t.owner for t in assignment.miners] if assignment else []
        return TaskView(
            task_id=record.task_id.hex(),
            phase=phase,
            client=record.client,
            reward=record.escrow / COIN,
            epochs=record.spec.epochs,
            dataset=record.spec.dataset.name,
            min_accuracy=record.spec.min_accuracy,
            created_height=record.height,
            miners=miners,
            progress=[
                MinerProgress(
                    miner=address,
                    epoch=state.epoch,
                    iterations=state.iterations,
                    loss=state.loss,
                    accuracy=state.accuracy,
                    finished=state.finished,
                )
                for address, state in sorted(progress.miners.items())
            ],
            blocks=progress.blocks,
            test_accuracy=test_accuracy,
            best_model_hash=best.hex() if best else None,
            model_available=best is not None and self.model_path(record.task_id, best).exists(),
            message=message,
            ranking=ranked,
        )


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _refund_message(record: TaskRecord) -> str:
    if record.withdrawals and record.closed_at < record.deadline:
        reasons = "; ".join(f"{entry.miner}: {entry.reason}" for entry in record.withdrawals)
        return f"every drawn miner left the task ({reasons}): its escrow went back to the client"
    return (
        f"no result settled the task by its deadline (height {record.deadline}): "
        "its escrow went back to the client"
    )
