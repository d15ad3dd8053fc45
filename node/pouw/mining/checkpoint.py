"""A miner's training state on disk, so that a restarted (or killed) miner resumes its task
where it was instead of retraining it from the first epoch.

A checkpoint is the trainer between two iterations: model and optimizer state, the position
(epoch, iteration) and the commitment its next message chains to. The mining worker saves one
at most every `every_s` seconds from the training thread, where that state is consistent, and
discards it when the task's training ends. Resuming repeats the iterations run since the last
save; their messages differ (another start model), so nothing is replayed. What a checkpoint
does not keep is rebuilt: the epoch's batches from the task seed, the compression residual
(it restarts at zero) and the peers' updates (those since the restart arrive again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from pouw.mining.trainer import TaskTrainer

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 10.0
FORMAT = 1


class TrainerCheckpoints:
    def __init__(
        self,
        directory: Path,
        every_s: float = CHECKPOINT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.every_s = every_s
        self.clock = clock
        self._saved_at: dict[bytes, float] = {}

    def path(self, task_id: bytes) -> Path:
        return self.directory / f"{task_id.hex()}.pt"

    def save(self, trainer: TaskTrainer) -> None:
        state = {
            "format": FORMAT,
            "worker_index": trainer.worker_index,
            "workers": trainer.workers,
            "epoch": trainer.epoch,
            "iteration": trainer.iteration,
            "commitment": trainer.commitment.hex(),
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(trainer.task_id)
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)
        self._saved_at[trainer.task_id] = self.clock()

    def save_if_due(self, trainer: TaskTrainer) -> None:
        last = self._saved_at.setdefault(trainer.task_id, self.clock())
        if self.clock() - last >= self.every_s:
            self.save(trainer)

    def restore(self, trainer: TaskTrainer) -> bool:
        """Load the task's checkpoint into a fresh `trainer`; False when there is none, or one
        that is unreadable or not of this shard and model (the trainer then starts afresh)."""
        path = self.path(trainer.task_id)
        if not path.exists():
            return False
        state = _load(path)
        if state is None:
            return False
        try:
            shard = (state["format"], state["worker_index"], state["workers"])
            if shard != (FORMAT, trainer.worker_index, trainer.workers):
                return False
            if _shapes(state["model"]) != _shapes(trainer.model.state_dict()):
                return False
            if not 0 <= state["iteration"] < trainer.batches_per_epoch or state["epoch"] < 0:
                return False
            trainer.model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
            trainer.resume(state["epoch"], state["iteration"], bytes.fromhex(state["commitment"]))
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
            log.warning("checkpoint %s not used: %s", path.name, error)
            return False
        self._saved_at[trainer.task_id] = self.clock()
        return True

    def discard(self, task_id: bytes) -> None:
        self.path(task_id).unlink(missing_ok=True)
        self._saved_at.pop(task_id, None)

    def keep_only(self, task_ids: Iterable[bytes]) -> None:
        """Remove the checkpoints of every other task (closed while this node was down)."""
        keep = {self.path(task_id).name for task_id in task_ids}
        for path in self.directory.glob("*.pt"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        state = torch.load(path, weights_only=True)
    except Exception as error:  # a file torn by a kill fails however the unpickler does
        log.warning("checkpoint %s unreadable: %s", path.name, error)
        return None
    return state if isinstance(state, dict) else None
