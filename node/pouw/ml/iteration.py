"""One deterministic training iteration, and the cheap fingerprints that commit to it.

Hashing every parameter every iteration would cost a large share of an iteration, so an
iteration commits to a strided sample of the parameters it started from and of the gradient
it computed. A verifier that re-runs the iteration on the same start model and batch gets the
same samples bit for bit on CPU in deterministic mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

DETERMINISTIC_THREADS = 1
FINGERPRINT_SAMPLES = 1024


def configure_determinism(threads: int = DETERMINISTIC_THREADS) -> None:
    """Fixed thread count and deterministic kernels: the same inputs give the same bits."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def sample_tensors(
    tensors: Sequence[torch.Tensor], samples: int = FINGERPRINT_SAMPLES
) -> torch.Tensor:
    """A strided sample across `tensors` (as if concatenated), about `samples` values long."""
    total = sum(t.numel() for t in tensors)
    stride = max(1, total // samples)
    picked = []
    offset = 0
    for tensor in tensors:
        flat = tensor.detach().reshape(-1)
        start = (-offset) % stride
        picked.append(flat[start::stride])
        offset += flat.numel()
    return torch.cat(picked).to(torch.float32)


@dataclass(frozen=True)
class IterationOutcome:
    loss: float
    correct: int
    samples: int
    start_sample: torch.Tensor
    grad_sample: torch.Tensor

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> IterationOutcome:
    """Forward and backward on one batch, leaving the gradients in `.grad` for the step."""
    parameters = list(model.parameters())
    start_sample = sample_tensors(parameters)
    for parameter in parameters:
        parameter.grad = None
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()  # type: ignore[no-untyped-call]
    correct = int((logits.detach().argmax(dim=1) == y).sum())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    return IterationOutcome(
        loss=float(loss.detach()),
        correct=correct,
        samples=len(y),
        start_sample=start_sample,
        grad_sample=sample_tensors(grads),
    )


def make_optimizer(name: str, model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    return torch.optim.SGD(model.parameters(), lr=learning_rate)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on a withheld set (evaluators only)."""
    if len(y) == 0:
        return 0.0
    return float((model(x).argmax(dim=1) == y).float().mean())
