"""The order in which a miner trains the open client tasks it was drawn for: the best paid per
unit of work first.

A task's work is what training it costs, from its spec alone: epochs x training rows x the
model's multiply-adds per sample (a CNN's convolutions count at every pixel). Its price is its
escrow over that work, compared exactly (fractions of integers); ties go to the older task,
then the lower task id. The order is a function of chain state only, so every miner drawn for
a task ranks it alike and the drawn miners train the same task together. A task of 1 base unit
and 10 000 epochs ranks below any task paid fairly for its work, so it can hold miners only
while nothing better paid is open; a better paid task that opens takes the miners at their next
iteration (the cheap one resumes where it stopped).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Protocol, TypeVar

from pouw.spec import ModelSpec, TaskSpec, TaskSpecError, dataset_shape, model_parameters


class OpenTask(Protocol):
    """What the order reads of a task on chain (`pouw.blockchain.state.TaskRecord`)."""

    @property
    def task_id(self) -> bytes: ...
    @property
    def spec(self) -> TaskSpec: ...
    @property
    def escrow(self) -> int: ...
    @property
    def height(self) -> int: ...


Task = TypeVar("Task", bound=OpenTask)

UNTRAINABLE = 2**128
"""The work of a spec that breaks the spec rules (none on chain does): it ranks last."""


def sample_cost(model: ModelSpec) -> int:
    """Multiply-adds of one forward pass of one sample (the backward pass is proportional)."""
    if model.architecture == "mlp":
        return model_parameters(model)
    channels, height, width = model.input_shape
    total, previous = 0, channels
    for width_out in model.layers[:-1]:
        total += (previous * width_out * 9 + width_out) * height * width
        previous = width_out
    return total + previous * height * width * model.layers[-1] + model.layers[-1]


def training_work(spec: TaskSpec) -> int:
    """What training the task costs: epochs x training rows x sample cost (at least 1)."""
    try:
        rows = dataset_shape(spec.dataset).rows
        cost = sample_cost(spec.model)
    except (TaskSpecError, ValueError):
        return UNTRAINABLE
    test_rows = max(1, round(spec.dataset.test_fraction * rows))
    return max(1, spec.epochs * max(1, rows - test_rows) * cost)


def price(record: OpenTask) -> Fraction:
    """Base units of escrow per unit of work."""
    return Fraction(record.escrow, training_work(record.spec))


def training_order(records: Iterable[Task]) -> list[Task]:
    """`records`, best paid per unit of work first; the older, then the lower id, on a tie."""
    return sorted(records, key=lambda r: (-price(r), r.height, r.task_id))
