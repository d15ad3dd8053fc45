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


class SamplingPlan:
    """Where to sample a list of tensors of fixed shapes: every `stride`-th value as if they
    were concatenated, about `samples` values in all. Computed once per model."""

    def __init__(self, shapes: Sequence[torch.Size], samples: int = FINGERPRINT_SAMPLES) -> None:
        total = sum(shape.numel() for shape in shapes)
        self.stride = max(1, total // samples)
        self.starts: list[int] = []
        offset = 0
        for shape in shapes:
            self.starts.append((-offset) % self.stride)
            offset += shape.numel()

    def sample(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        stride = self.stride
        with torch.no_grad():
            return torch.cat(
                [t.view(-1)[start::stride] for t, start in zip(tensors, self.starts, strict=True)]
            )


def sample_tensors(
    tensors: Sequence[torch.Tensor], samples: int = FINGERPRINT_SAMPLES
) -> torch.Tensor:
    """A strided sample across `tensors` (as if concatenated), about `samples` values long."""
    return SamplingPlan([t.shape for t in tensors], samples).sample(tensors)


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


def forward_backward(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: SamplingPlan | None = None
) -> IterationOutcome:
    """Forward and backward on one batch, leaving the gradients in `.grad` for the step."""
    parameters = list(model.parameters())
    plan = plan or SamplingPlan([p.shape for p in parameters])
    start_sample = plan.sample(parameters)
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
        grad_sample=plan.sample(grads),
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
