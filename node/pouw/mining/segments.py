"""Segments: how a block's start model is bound to its miner's training.

A miner's iterations on a task are at positions (epoch, iteration). Each epoch is cut into
segments of K = `checkpoint_interval` iterations: the segment of (e, i) starts at
(e, i - i mod K). Peers' corrections are applied only at segment starts, so inside a
segment the model follows from its start alone: the optimizer's steps on the scheduled batches.
The state at a segment start (model and optimizer) is the segment's *checkpoint*; its hash is in
every IT_RES of the segment and a block carries the checkpoint's bytes. Anyone re-executes a
block from its checkpoint: at most K iterations. Segment 0's checkpoint is the task's initial
model, which anyone can rebuild.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import nn

from pouw.crypto import canonical_bytes
from pouw.ml.iteration import make_optimizer
from pouw.ml.models import (
    CorruptModel,
    build_model,
    load_model_state,
    read_safetensors,
    state_to_bytes,
)
from pouw.spec import TaskSpec

OPTIMIZER_PREFIX = "optimizer."

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pouw-checkpoint")


class Segment:
    """A segment's checkpoint and its hash, taken on a worker thread while the segment's first
    iteration runs forward and backward, which only read the parameters: copying and hashing
    a 1 M-parameter model costs a sixth of an iteration that the training thread would
    otherwise spend (torch and hashlib release the GIL). `taken()` must return before the
    optimizer steps (`TaskTrainer.step`)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._taken: Future[tuple[dict[str, torch.Tensor], bytes]] = _worker.submit(
            _take, model, optimizer
        )

    def taken(self) -> tuple[dict[str, torch.Tensor], bytes]:
        return self._taken.result()

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.taken()[0]

    @property
    def checkpoint_hash(self) -> bytes:
        return self.taken()[1]


def _take(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], bytes]:
    state = checkpoint_state(model, optimizer)
    return state, checkpoint_hash(state)


def position(epoch: int, iteration: int) -> int:
    """(epoch, iteration) as one integer with the same order (iteration < 2**31)."""
    return epoch << 32 | iteration


def segment_start(iteration: int, interval: int) -> int:
    """The iteration its segment starts at, in the same epoch."""
    return iteration - iteration % interval


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters and the optimizer's per-parameter state:
    `optimizer.<index>.<name>` for the state of the index-th parameter."""
    tensors = {name: t.detach().clone() for name, t in model.state_dict().items()}
    for index, parameter in enumerate(model.parameters()):
        for name, value in optimizer.state.get(parameter, {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = value.detach().clone()
    return tensors


def checkpoint_hash(tensors: dict[str, torch.Tensor]) -> bytes:
    """H("pouw-checkpoint" || for each tensor in name order: name, dtype, shape, raw bytes).
    Over the tensors, not their file: a miner hashes each segment's start without writing a
    file, and writes one only for a block it wins."""
    digest = hashlib.sha256(b"pouw-checkpoint")
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(canonical_bytes((name, str(tensor.dtype), list(tensor.shape))))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.digest()


def checkpoint_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return state_to_bytes(tensors)


def initial_checkpoint(task_id: bytes, spec: TaskSpec) -> dict[str, torch.Tensor]:
    model = build_model(spec.model, seed=task_id)
    return checkpoint_state(model, make_optimizer(spec.optimizer, model, spec.learning_rate))


def read_checkpoint(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file; CorruptModel when it is not one."""
    return read_safetensors(data)


def load_checkpoint(
    spec: TaskSpec, task_id: bytes, loaded: dict[str, torch.Tensor]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A fresh model and optimizer in the checkpoint's state; CorruptModel when it holds
    anything but the task model's parameters and its optimizer's state for them."""
    model = build_model(spec.model, seed=task_id)
    weights = {k: v for k, v in loaded.items() if not k.startswith(OPTIMIZER_PREFIX)}
    load_model_state(model, weights)
    optimizer = make_optimizer(spec.optimizer, model, spec.learning_rate)
    _load_optimizer_state(optimizer, list(model.parameters()), loaded)
    return model, optimizer


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    loaded: dict[str, torch.Tensor],
) -> None:
    template = _optimizer_template(optimizer, parameters)
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in loaded.items():
        if not key.startswith(OPTIMIZER_PREFIX):
            continue
        index_text, _, name = key[len(OPTIMIZER_PREFIX) :].partition(".")
        if not index_text.isdigit() or int(index_text) >= len(parameters):
            raise CorruptModel(f"optimizer state {key} names no parameter")
        found.setdefault(int(index_text), {})[name] = value
    if not found:
        return  # a fresh optimizer: the state before its first step
    for index, parameter in enumerate(parameters):
        state = found.get(index, {})
        if state.keys() != template.keys():
            raise CorruptModel(f"optimizer state of parameter {index} is incomplete")
        for name, value in state.items():
            shape = parameter.shape if template[name] == "parameter" else torch.Size([])
            if value.shape != shape or value.dtype != torch.float32:
                raise CorruptModel(f"optimizer state {index}.{name} has the wrong shape")
        optimizer.state[parameter] = dict(state)


def _optimizer_template(
    optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter]
) -> dict[str, str]:
    """The per-parameter state names of one step of this optimizer: a parameter-shaped tensor
    or a scalar."""
    if isinstance(optimizer, torch.optim.Adam):
        return {"step": "scalar", "exp_avg": "parameter", "exp_avg_sq": "parameter"}
    del parameters
    return {}
