"""Checking a mined block: every node re-executes it before storing it.

`check_seal` is the cheap part: the iteration message decodes, belongs to an open task and to
the block's miner, the header carries its precursor, and the nonce is derived from the precursor
within the budget. `reexecute` adds the rest: the block's checkpoint is the one the IT_RES
names (segment 0: the task's initial model), and re-running the iteration from it (at most
`checkpoint_interval` iterations, `pouw.mining.segments`) gives the published batch, start
sample, loss, correct count and gradient sample, bit for bit. Only the `cpu` device class is
exact; any other is refused (a GPU's kernels may differ in the last bits, and a tolerance would
let a miner vary its outputs, and so its precursor, for free).

What the IT_RES claims against the branch (a drawn ticket, a fresh position, the segment's
checkpoint) is checked when the block is applied: `pouw.mining.claims`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from cachetools import LRUCache
from torch import nn

from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.blockchain.params import ChainParams
from pouw.crypto import sha256
from pouw.errors import InvalidBlock, MalformedData, Reason
from pouw.mining.budget import OVER_BUDGET_SEARCH, nonce_budget, nonce_index
from pouw.mining.segments import (
    checkpoint_hash,
    initial_checkpoint,
    load_checkpoint,
    position,
    read_checkpoint,
    segment_start,
)
from pouw.mining.trainer import task_batch
from pouw.ml.datasets import Dataset, DatasetError, batches_per_epoch, load_dataset, shard_indices
from pouw.ml.iteration import IterationOutcome, ModelFingerprint, forward_backward
from pouw.ml.models import CorruptModel, build_model, parameter_count
from pouw.spec import TaskSpec

EXACT_DEVICE_CLASS = "cpu"
VERIFIED_KEPT = 4096
"""Hashes of blocks that passed re-execution, so that a block checked by a verifier's role
before it reaches the chain's seal rule is not re-run twice."""

TaskLookup = Callable[[bytes], TaskSpec | None]


@dataclass(frozen=True)
class Verification:
    block_hash: bytes
    seconds: float
    loss: float
    accuracy: float
    iterations: int
    """Iterations re-run: from the segment's start to the block's position."""
    checkpoint_bytes_hash: bytes
    """Of the bytes it was re-run from: the block hash does not cover them."""


@dataclass(frozen=True)
class _TaskFacts:
    model_size: int
    initial_checkpoint_hash: bytes


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
        self._facts: dict[bytes, _TaskFacts] = {}
        self._verified: LRUCache[bytes, Verification] = LRUCache(VERIFIED_KEPT)
        self._fake: LRUCache[bytes, InvalidBlock] = LRUCache(VERIFIED_KEPT)
        """Blocks whose signed IT_RES re-executes to something else: fake whatever bytes
        come with them next, so never re-run."""

    def _task_facts(self, task_id: bytes, spec: TaskSpec) -> _TaskFacts:
        facts = self._facts.get(task_id)
        if facts is None:
            size = parameter_count(build_model(spec.model, seed=task_id))
            initial = checkpoint_hash(initial_checkpoint(task_id, spec))
            facts = self._facts[task_id] = _TaskFacts(size, initial)
        return facts

    def check_seal(self, block: Block) -> tuple[IterationMessage, TaskSpec]:
        """The checks that need no training."""
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
        if header.device_class != EXACT_DEVICE_CLASS:
            raise InvalidBlock(Reason.INEXACT_DEVICE, repr(header.device_class), height)
        if header.history_commitment != message.commitment():
            raise InvalidBlock(
                Reason.COMMITMENT_MISMATCH, "header does not carry the commitment", height
            )
        precursor = message.precursor()
        if header.precursor != precursor:
            raise InvalidBlock(
                Reason.PRECURSOR_MISMATCH, "header does not carry the precursor", height
            )
        model_size = self._task_facts(message.task_id, spec).model_size
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
        return message, spec

    def vouch(self, block: Block) -> None:
        """The node's own honest miner computed this block: its chain need not re-run it."""
        message = decode_iteration_message(block.iteration_message)
        self._verified[block.hash()] = Verification(
            block.hash(), 0.0, message.loss, message.correct / message.samples, 0,
            sha256(block.checkpoint),
        )  # fmt: skip

    def __call__(self, block: Block) -> None:
        """The seal rule every node's chain runs: the whole re-execution."""
        self.reexecute(block)

    def reexecute(self, block: Block) -> Verification:
        """Re-run the block's segment up to its iteration; raise InvalidBlock naming the first
        mismatch."""
        block_hash = block.hash()
        known = self._verified.get(block_hash)
        if known is not None and known.checkpoint_bytes_hash == sha256(block.checkpoint):
            return known
        fake = self._fake.get(block_hash)
        if fake is not None:
            raise fake
        try:
            verification = self._reexecute(block, block_hash)
        except InvalidBlock as error:
            if error.reason.fake_work:
                self._fake[block_hash] = error
            raise
        self._verified[block_hash] = verification
        return verification

    def failure(self, block: Block) -> Reason | None:
        """Why the block fails re-execution, None when it holds: what slashing evidence asks
        (`pouw.blockchain.slashing.ReexecutionCheck`). Cached like every re-execution, so the
        checkpoint's bytes, which the block hash does not cover, are checked first: a node
        that re-ran this block before answers as one that never saw it."""
        try:
            message = decode_iteration_message(block.iteration_message)
            if checkpoint_hash(read_checkpoint(block.checkpoint)) != message.checkpoint_hash:
                return Reason.CHECKPOINT_BYTES
        except (MalformedData, CorruptModel):
            return Reason.CHECKPOINT_BYTES
        try:
            self.reexecute(block)
        except InvalidBlock as error:
            return error.reason
        return None

    def _reexecute(self, block: Block, block_hash: bytes) -> Verification:
        started = time.perf_counter()
        message, spec = self.check_seal(block)
        height = block.header.height
        try:
            dataset = self.datasets(spec)
        except DatasetError as error:
            raise InvalidBlock(Reason.DATASET_UNAVAILABLE, str(error), height) from None
        if message.workers != spec.miners or message.worker_index >= message.workers:
            raise InvalidBlock(
                Reason.BAD_WORKER_INDEX, f"{message.worker_index}/{message.workers}", height
            )
        shard = shard_indices(len(dataset.y_train), message.worker_index, message.workers)
        per_epoch = batches_per_epoch(len(shard), spec.batch_size)
        if message.epoch >= spec.epochs or message.iteration >= per_epoch:
            raise InvalidBlock(
                Reason.BAD_POSITION, f"epoch {message.epoch} iteration {message.iteration}", height
            )
        at = message.iteration
        start = segment_start(at, self.params.checkpoint_interval)
        segment = position(message.epoch, start)
        model, optimizer = self._start_from(block, message, spec, segment)
        outcome = _replay(model, optimizer, block, message, spec, dataset, shard, start)
        _compare(message, outcome, height)
        seconds = time.perf_counter() - started
        return Verification(
            block_hash,
            seconds,
            outcome.loss,
            outcome.accuracy,
            at - start + 1,
            sha256(block.checkpoint),
        )

    def _start_from(
        self, block: Block, message: IterationMessage, spec: TaskSpec, segment: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The model and optimizer at the segment's start, from the block's checkpoint."""
        height = block.header.height
        try:
            tensors = read_checkpoint(block.checkpoint)
        except CorruptModel as error:
            raise InvalidBlock(Reason.CHECKPOINT_BYTES, str(error), height) from None
        if checkpoint_hash(tensors) != message.checkpoint_hash:
            raise InvalidBlock(
                Reason.CHECKPOINT_BYTES, "the checkpoint is not the one the IT_RES names", height
            )
        try:
            loaded = load_checkpoint(spec, message.task_id, tensors)
        except CorruptModel as error:
            raise InvalidBlock(Reason.CORRUPT_MODEL, str(error), height) from None
        facts = self._task_facts(message.task_id, spec)
        if segment == 0 and message.checkpoint_hash != facts.initial_checkpoint_hash:
            raise InvalidBlock(
                Reason.CHECKPOINT_MISMATCH, "segment 0 must start from the initial model", height
            )
        return loaded


def _replay(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    block: Block,
    message: IterationMessage,
    spec: TaskSpec,
    dataset: Dataset,
    shard: torch.Tensor,
    start: int,
) -> IterationOutcome:
    """Train from the segment's start up to the block's iteration, which is run but not
    stepped: its outcome is what the IT_RES published."""
    height = block.header.height
    fingerprint = ModelFingerprint(model)
    try:
        for step in range(start, message.iteration + 1):
            x, y, digest = task_batch(dataset, spec, message.task_id, shard, message.epoch, step)
            outcome = forward_backward(model, x, y, fingerprint)
            if step < message.iteration:
                optimizer.step()
    except (RuntimeError, IndexError, ValueError) as error:  # a model that cannot fit its data
        raise InvalidBlock(Reason.UNRUNNABLE_TASK, str(error)[:200], height) from None
    if digest != message.batch_hash or message.samples != len(y):
        raise InvalidBlock(Reason.BATCH_MISMATCH, "batch hash is not the scheduled batch's", height)
    return outcome


def _compare(message: IterationMessage, outcome: IterationOutcome, height: int) -> None:
    if outcome.start_sample != message.start_sample:
        raise InvalidBlock(
            Reason.STALE_START_MODEL, "the segment does not lead to the start model", height
        )
    if outcome.loss != message.loss:
        raise InvalidBlock(
            Reason.LOSS_MISMATCH, f"published {message.loss}, re-run {outcome.loss}", height
        )
    if outcome.correct != message.correct:
        raise InvalidBlock(
            Reason.ACCURACY_MISMATCH,
            f"published {message.correct}, re-run {outcome.correct}",
            height,
        )
    if outcome.grad_sample != message.grad_sample:
        raise InvalidBlock(Reason.UPDATE_MISMATCH, "gradient differs from the re-run", height)
