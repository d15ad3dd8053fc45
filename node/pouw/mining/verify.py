"""Checking a mined block.

`check_seal` is what every node runs: the iteration message decodes, belongs to a known task
and to the block's miner, the header commits to its commitment and precursor, and the nonce is
derived from the precursor within the budget. `BlockVerifier.reexecute` is what verifiers add:
rebuild the batch, load the start model, re-run the iteration and compare.

Exact mode (a block mined on CPU): loss, correct count and gradient sample must match bit for
bit. Tolerance mode (a block whose header names another device class): the float results may
differ by kernel choice, so the loss may differ by TOLERANCE relative, the correct count by 1%
of the batch, and the gradient sample by TOLERANCE in relative L2 norm; the commitment and
precursor are still computed from the published sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from pouw.blockchain.block import Block
from pouw.blockchain.params import ChainParams
from pouw.errors import InvalidBlock, MalformedData, Reason
from pouw.mining.budget import OVER_BUDGET_SEARCH, nonce_budget, nonce_index
from pouw.mining.messages import IterationMessage, decode_iteration_message
from pouw.mining.trainer import task_batch
from pouw.ml.datasets import Dataset, DatasetError, load_dataset, shard_indices
from pouw.ml.iteration import forward_backward
from pouw.ml.models import CorruptModel, build_model, load_model_bytes, parameter_count
from pouw.spec import TaskSpec

TOLERANCE = 1e-3
EXACT_DEVICE_CLASS = "cpu"

TaskLookup = Callable[[bytes], TaskSpec | None]


@dataclass(frozen=True)
class Verification:
    block_hash: bytes
    seconds: float
    loss: float
    accuracy: float


class BlockVerifier:
    def __init__(
        self,
        params: ChainParams,
        tasks: TaskLookup,
        *,
        datasets: Callable[[TaskSpec], Dataset] = lambda spec: load_dataset(spec.dataset),
    ) -> None:
        self.params = params
        self.tasks = tasks
        self.datasets = datasets
        self._models: dict[bytes, tuple[nn.Module, int]] = {}

    def _model(self, task_id: bytes, spec: TaskSpec) -> tuple[nn.Module, int]:
        cached = self._models.get(task_id)
        if cached is None:
            model = build_model(spec.model, seed=task_id)
            cached = self._models[task_id] = (model, parameter_count(model))
        return cached

    def check_seal(self, block: Block) -> IterationMessage:
        """The checks every node runs: cheap, no training."""
        height = block.header.height
        header = block.header
        try:
            message = decode_iteration_message(block.iteration_message)
        except MalformedData as error:
            raise InvalidBlock(Reason.MALFORMED_ITERATION, str(error), height) from None
        spec = self.tasks(message.task_id)
        if spec is None:
            raise InvalidBlock(Reason.UNKNOWN_TASK, message.task_id.hex()[:16], height)
        if message.miner != header.miner:
            raise InvalidBlock(
                Reason.MINER_MISMATCH, "iteration message is from another miner", height
            )
        commitment = message.commitment()
        if header.history_commitment != commitment:
            raise InvalidBlock(
                Reason.COMMITMENT_MISMATCH, "header does not carry the commitment", height
            )
        precursor = message.precursor()
        if header.precursor != precursor:
            raise InvalidBlock(
                Reason.PRECURSOR_MISMATCH, "header does not carry the precursor", height
            )
        _, model_size = self._model(message.task_id, spec)
        budget = nonce_budget(self.params.omega_b, self.params.omega_m, spec.batch_size, model_size)
        if nonce_index(precursor, header.nonce, budget) is None:
            beyond = nonce_index(precursor, header.nonce, budget + OVER_BUDGET_SEARCH)
            if beyond is not None:
                raise InvalidBlock(
                    Reason.NONCE_OVER_BUDGET, f"nonce #{beyond} but the budget is {budget}", height
                )
            raise InvalidBlock(
                Reason.NONCE_NOT_DERIVED, "nonce is not derived from the precursor", height
            )
        return message

    def __call__(self, block: Block) -> None:
        self.check_seal(block)

    def reexecute(self, block: Block) -> Verification:
        """Re-run the block's iteration; raise InvalidBlock naming the first mismatch."""
        started = time.perf_counter()
        message = self.check_seal(block)
        height = block.header.height
        spec = self.tasks(message.task_id)
        assert spec is not None
        try:
            dataset = self.datasets(spec)
        except DatasetError as error:
            raise InvalidBlock(Reason.DATASET_UNAVAILABLE, str(error), height) from None
        if message.workers != spec.miners or message.worker_index >= message.workers:
            raise InvalidBlock(
                Reason.BAD_WORKER_INDEX, f"{message.worker_index}/{message.workers}", height
            )
        shard = shard_indices(len(dataset.y_train), message.worker_index, message.workers)
        try:
            x, y, digest = task_batch(
                dataset, spec, message.task_id, shard, message.epoch, message.iteration
            )
        except IndexError:
            raise InvalidBlock(
                Reason.BATCH_MISMATCH, "no such batch in the epoch", height
            ) from None
        if digest != message.batch_hash:
            raise InvalidBlock(
                Reason.BATCH_MISMATCH, "batch hash is not the scheduled batch's", height
            )
        if message.samples != len(y):  # it scales tolerance mode's slack on the correct count
            raise InvalidBlock(Reason.BATCH_MISMATCH, f"{message.samples} samples claimed", height)
        model, _ = self._model(message.task_id, spec)
        try:
            load_model_bytes(model, block.checkpoint)
        except CorruptModel as error:
            raise InvalidBlock(Reason.CORRUPT_MODEL, str(error), height) from None
        try:
            outcome = forward_backward(model, x, y)
        except (RuntimeError, IndexError, ValueError) as error:  # a model that cannot fit its data
            raise InvalidBlock(Reason.UNRUNNABLE_TASK, str(error)[:200], height) from None
        if outcome.start_sample != message.start_sample:
            raise InvalidBlock(
                Reason.STALE_START_MODEL, "checkpoint is not the iteration's start model", height
            )
        exact = block.header.device_class == EXACT_DEVICE_CLASS
        _compare(message, outcome.loss, outcome.correct, outcome.grad_sample, exact, height)
        return Verification(
            block.hash(), time.perf_counter() - started, outcome.loss, outcome.accuracy
        )


def _compare(
    message: IterationMessage,
    loss: float,
    correct: int,
    grad_sample: bytes,
    exact: bool,
    height: int,
) -> None:
    if len(message.grad_sample) != len(grad_sample):  # before frombuffer: any length may come
        raise InvalidBlock(Reason.UPDATE_MISMATCH, "gradient sample has the wrong length", height)
    published = np.frombuffer(message.grad_sample, dtype=np.float32)
    recomputed = np.frombuffer(grad_sample, dtype=np.float32)
    if exact:
        if loss != message.loss:
            raise InvalidBlock(
                Reason.LOSS_MISMATCH, f"published {message.loss}, re-run {loss}", height
            )
        if correct != message.correct:
            raise InvalidBlock(
                Reason.ACCURACY_MISMATCH, f"published {message.correct}, re-run {correct}", height
            )
        if grad_sample != message.grad_sample:
            raise InvalidBlock(Reason.UPDATE_MISMATCH, "gradient differs from the re-run", height)
        return
    if not math.isclose(loss, message.loss, rel_tol=TOLERANCE):
        raise InvalidBlock(Reason.LOSS_MISMATCH, f"published {message.loss}, re-run {loss}", height)
    if abs(correct - message.correct) > max(1, message.samples // 100):
        raise InvalidBlock(
            Reason.ACCURACY_MISMATCH, f"published {message.correct}, re-run {correct}", height
        )
    error = float(np.linalg.norm(published - recomputed)) / max(
        float(np.linalg.norm(recomputed)), 1e-12
    )
    if not error <= TOLERANCE:
        raise InvalidBlock(
            Reason.UPDATE_MISMATCH, f"relative error {error:.2e} above {TOLERANCE}", height
        )
