"""The miner loop: every training iteration is also a bounded round of nonce trials.

The training thread runs forward/backward, derives the precursor from the iteration
(`pouw.blockchain.iteration_message`), tries its nonce budget against the current block
template and takes the optimizer step. At each segment start (`pouw.mining.segments`) it first
applies its peers' updates through the task's aggregator (`pouw.mining.peers`), then takes the
checkpoint that every block of the segment carries. A pipeline thread does the rest off the
training thread: Strom compression of the update for peers, signing, and sealing found blocks.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import torch

from pouw.blockchain.block import Block, BlockHeader, meets_difficulty, seal_hash, sign_block
from pouw.blockchain.iteration_message import NO_UPDATES_HASH, IterationMessage, sign_iteration
from pouw.blockchain.params import ChainParams
from pouw.crypto import ZERO_HASH, KeyPair, sha256
from pouw.errors import PouwError
from pouw.mining.budget import derive_nonce, node_budget, nonce_budget
from pouw.mining.peers import apply_correction
from pouw.mining.segments import checkpoint_bytes
from pouw.mining.trainer import TaskTrainer
from pouw.ml.compression import CompressedUpdate, StromCompressor
from pouw.ml.iteration import forward_backward

TemplateSource = Callable[[], Block | None]
"""The current unsealed block to mine on (None: nothing to mine on right now)."""

Entitlement = Callable[["TaskTrainer"], bytes | None]
"""The ticket id the trainer's next iteration may claim a block with (`pouw.mining.claims`),
or None when it may not seal one (not drawn, position already sealed on the chain, import
backlog): its nonces are then not tried."""


def bootstrap_phase(trainer: TaskTrainer) -> bytes | None:
    """No tickets yet: the zero ticket id of the bootstrap phase."""
    del trainer
    return ZERO_HASH


@dataclass(frozen=True)
class PublishedIteration:
    """What a miner gossips after an iteration: the message, its compressed update, signed."""

    message: bytes
    update: bytes
    signature: bytes


@dataclass
class MiningStats:
    iterations: int = 0
    samples: int = 0
    nonces_tried: int = 0
    blocks_found: int = 0
    last_loss: float = float("nan")
    last_accuracy: float = float("nan")
    losses: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


@dataclass(frozen=True)
class _Handoff:
    message: IterationMessage
    encoded: bytes
    grads: list[torch.Tensor]
    sealed: BlockHeader | None
    template: Block | None
    checkpoint: dict[str, torch.Tensor] | None


_STOP = object()


class Tampering(Protocol):
    """What a Byzantine miner changes in what it publishes (devnets and tests only:
    `pouw.node.byzantine`). An honest miner has none. Its own training stays honest."""

    def message(self, trainer: TaskTrainer, message: IterationMessage) -> IterationMessage:
        """The iteration message to publish and mine with (training thread)."""
        ...

    def gradients(
        self, trainer: TaskTrainer, x: torch.Tensor, y: torch.Tensor, grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The gradients its published update is made from (training thread, after the step)."""
        ...

    def update(self, trainer: TaskTrainer, update: CompressedUpdate) -> CompressedUpdate:
        """The compressed update to publish instead of `update` (pipeline thread)."""
        ...


class MinerPipelineError(PouwError, RuntimeError):
    pass


class TrainingDiverged(PouwError, ArithmeticError):
    """A non-finite loss: the task's hyperparameters make this model diverge."""


class Miner:
    def __init__(
        self,
        key: KeyPair,
        params: ChainParams,
        templates: TemplateSource,
        *,
        on_block: Callable[[Block], None],
        on_iteration: Callable[[PublishedIteration], None] | None = None,
        intensity: float = 1.0,
        device_class: str = "cpu",
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        tampering: Tampering | None = None,
        entitlement: Entitlement = bootstrap_phase,
    ) -> None:
        self.key = key
        self.params = params
        self.templates = templates
        self.on_block = on_block
        self.on_iteration = on_iteration
        self.intensity = intensity
        self.device_class = device_class
        self.clock_ms = clock_ms
        self.tampering = tampering
        self.entitlement = entitlement
        self.stats = MiningStats()
        self._sealed_on: bytes | None = None

    def train(
        self,
        trainer: TaskTrainer,
        *,
        stop: threading.Event | None = None,
        max_iterations: int | None = None,
        progress: Callable[[MiningStats], None] | None = None,
    ) -> MiningStats:
        """Train until the task's epochs are done, `stop` is set or `max_iterations` ran."""
        stop = stop or threading.Event()
        allowed = nonce_budget(
            self.params.omega_b, self.params.omega_m, trainer.spec.batch_size, trainer.model_size
        )
        budget = node_budget(allowed, self.intensity)
        handoffs: queue.Queue[_Handoff | object] = queue.Queue(maxsize=2)
        failures: list[BaseException] = []
        pipeline = threading.Thread(
            target=self._pipeline,
            args=(trainer, handoffs, failures),
            name="pouw-miner-pipeline",
            daemon=True,
        )
        pipeline.start()
        parameters = list(trainer.model.parameters())
        ran = 0
        try:
            while not trainer.finished and not stop.is_set() and not failures:
                if max_iterations is not None and ran >= max_iterations:
                    break
                handoff = self._iterate(trainer, parameters, budget)
                while not failures:
                    try:
                        handoffs.put(handoff, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                ran += 1
                if progress is not None:
                    progress(self.stats)
        finally:
            if not failures:
                handoffs.put(_STOP)
            pipeline.join()
        if failures:
            raise MinerPipelineError("the miner's pipeline thread failed") from failures[0]
        return self.stats

    def _iterate(
        self, trainer: TaskTrainer, parameters: list[torch.nn.Parameter], budget: int
    ) -> _Handoff:
        applied = None
        if trainer.at_segment_start:
            if trainer.peers is not None and (trainer.epoch, trainer.iteration) != (0, 0):
                applied = trainer.peers.take()  # never before the first: it is the initial model
            if applied is not None:
                apply_correction(parameters, applied.correction)
            trainer.start_segment()
        x, y, batch_digest = trainer.batch()
        outcome = forward_backward(trainer.model, x, y, trainer.fingerprint)
        if not math.isfinite(outcome.loss):
            raise TrainingDiverged(f"loss is {outcome.loss} at epoch {trainer.epoch}")
        ticket_id = self.entitlement(trainer)
        segment = trainer.segment
        message = IterationMessage(
            task_id=trainer.task_id,
            miner=self.key.public_key,
            ticket_id=ticket_id or ZERO_HASH,
            worker_index=trainer.worker_index,
            workers=trainer.workers,
            epoch=trainer.epoch,
            iteration=trainer.iteration,
            checkpoint_hash=ZERO_HASH if segment is None else segment.checkpoint_hash,
            batch_hash=batch_digest,
            loss=outcome.loss,
            correct=outcome.correct,
            samples=outcome.samples,
            start_sample=outcome.start_sample,
            grad_sample=outcome.grad_sample,
            applied_updates_hash=NO_UPDATES_HASH if applied is None else applied.digest,
            previous_commitment=trainer.commitment,
        )
        if self.tampering is not None:
            message = self.tampering.message(trainer, message)
        encoded = message.encode()
        commitment = message.commitment()
        template = self.templates()
        sealed = None
        if (
            ticket_id is not None
            and segment is not None
            and template is not None
            and template.header.prev_hash != self._sealed_on
        ):
            sealed = self._try_nonces(
                template.header, sha256(encoded), commitment, message.precursor(), budget
            )
            if sealed is not None:
                self._sealed_on = sealed.prev_hash
        trainer.step()
        trainer.advance(commitment)
        stats = self.stats
        stats.iterations += 1
        stats.samples += outcome.samples
        stats.last_loss, stats.last_accuracy = outcome.loss, outcome.accuracy
        stats.losses.append(outcome.loss)
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.tampering is not None:
            grads = self.tampering.gradients(trainer, x, y, grads)
        checkpoint = segment.state if sealed is not None and segment is not None else None
        return _Handoff(message, encoded, grads, sealed, template, checkpoint)

    def _try_nonces(
        self,
        header: BlockHeader,
        iteration_hash: bytes,
        commitment: bytes,
        precursor: bytes,
        budget: int,
    ) -> BlockHeader | None:
        for index in range(budget):
            nonce = derive_nonce(precursor, index)
            self.stats.nonces_tried += 1
            if meets_difficulty(seal_hash(header.prev_hash, precursor, nonce), header.difficulty):
                return msgspec.structs.replace(
                    header,
                    timestamp_ms=max(header.timestamp_ms, self.clock_ms()),
                    iteration_hash=iteration_hash,
                    history_commitment=commitment,
                    precursor=precursor,
                    nonce=nonce,
                    device_class=self.device_class,
                )
        return None

    def _pipeline(
        self,
        trainer: TaskTrainer,
        handoffs: queue.Queue[_Handoff | object],
        failures: list[BaseException],
    ) -> None:
        try:
            self._publish_and_seal(trainer, handoffs)
        except BaseException as error:  # handed to the training thread, which re-raises it
            failures.append(error)

    def _publish_and_seal(
        self, trainer: TaskTrainer, handoffs: queue.Queue[_Handoff | object]
    ) -> None:
        compressor: StromCompressor | None = None
        learning_rate = trainer.spec.learning_rate
        tau = trainer.spec.tau
        while True:
            item = handoffs.get()
            if item is _STOP:
                return
            assert isinstance(item, _Handoff)
            update = b""
            if tau > 0:
                size = sum(g.numel() for g in item.grads)
                compressor = compressor or StromCompressor(size, tau)
                compressed = compressor.compress_parts(item.grads, -learning_rate)
                update = compressed.to_bytes()
                if trainer.peers is not None:
                    trainer.peers.add(self.key.public_key, update)
                if self.tampering is not None:
                    update = self.tampering.update(trainer, compressed).to_bytes()
            signature = sign_iteration(self.key, self.params.chain_id, item.encoded, update)
            if self.on_iteration is not None:
                self.on_iteration(PublishedIteration(item.encoded, update, signature))
            if (
                item.sealed is not None
                and item.template is not None
                and item.checkpoint is not None
            ):
                block = msgspec.structs.replace(
                    item.template,
                    header=item.sealed,
                    iteration_message=item.encoded,
                    checkpoint=checkpoint_bytes(item.checkpoint),
                )
                self.stats.blocks_found += 1
                self.on_block(sign_block(block, self.key, self.params.chain_id))
