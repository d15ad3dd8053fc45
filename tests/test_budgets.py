"""ByteBudget: a sender's share and the total, each charge under its key, released in full."""

from __future__ import annotations

import pytest

from pouw.budgets import (
    FINAL_MODEL_BYTES_PER_SENDER,
    FINAL_MODEL_BYTES_TOTAL,
    FINAL_MODEL_ITEM_BYTES,
    LARGEST_FINAL_MODEL_BYTES,
    ByteBudget,
    final_model_bytes,
)
from pouw.errors import Reason
from pouw.ml.models import build_model, model_to_bytes
from pouw.spec import MAX_MODEL_PARAMETERS, ModelSpec, model_parameters


def test_a_budget_refuses_past_the_sender_s_share_then_past_the_total() -> None:
    budget: ByteBudget[str, str] = ByteBudget(per_sender=100, total=150)
    assert budget.charge("a1", "alice", 60) is None
    assert budget.charge("a2", "alice", 50) == Reason.OVER_SENDER_BUDGET
    assert budget.charge("b1", "bob", 91) == Reason.STORE_FULL
    assert budget.charge("b1", "bob", 80) is None
    assert (budget.used, budget.of("alice"), budget.of("bob")) == (140, 60, 80)


def test_a_charge_under_the_same_key_replaces_the_old_one() -> None:
    budget: ByteBudget[str, str] = ByteBudget(per_sender=100, total=100)
    assert budget.charge("model", "alice", 90) is None
    assert budget.charge("model", "alice", 100) is None  # the 90 it held are given back
    assert budget.used == budget.of("alice") == 100
    budget.release("model")
    assert budget.used == budget.of("alice") == 0 and not budget.holds("model")


def test_empty_charges_come_and_go_in_any_order() -> None:
    budget: ByteBudget[None, int] = ByteBudget(per_sender=10, total=10)
    for key in (1, 2):
        assert budget.charge(key, None, 0) is None
    budget.release(1)
    budget.release(2)
    budget.add(3, None, 4)
    assert budget.used == budget.of(None) == 4


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(layers=(4, 8, 3)),
        ModelSpec(layers=(784, 512, 256, 128, 64, 32, 16, 10), activation="tanh"),
        ModelSpec(layers=(16, 32, 10), architecture="cnn", input_shape=(1, 28, 28)),
    ],
)
def test_a_final_model_of_a_spec_fits_the_size_its_spec_implies(spec: ModelSpec) -> None:
    """The bound is the model's float32 parameters as safetensors and a header allowance: no
    honest model is refused for its size, and a model a few tensors larger is."""
    model = model_to_bytes(build_model(spec, seed=b"any"))
    bound = final_model_bytes(spec)
    assert len(model) <= bound < len(model) + 2 * len(spec.layers) * 128 + 8


def test_the_final_model_budget_admits_a_legitimate_task_of_the_largest_models() -> None:
    """One miner's share holds several of the largest models a spec allows (16 Mi parameters:
    64 MiB), and the total holds several such tasks' models (three miners each)."""
    largest = ModelSpec(layers=(1023, 16383))  # 16 Mi parameters, to the last 16 Ki
    assert model_parameters(largest) <= MAX_MODEL_PARAMETERS
    assert final_model_bytes(largest) <= LARGEST_FINAL_MODEL_BYTES
    assert FINAL_MODEL_BYTES_PER_SENDER >= 2 * (LARGEST_FINAL_MODEL_BYTES + FINAL_MODEL_ITEM_BYTES)
    assert FINAL_MODEL_BYTES_TOTAL >= 3 * 3 * (LARGEST_FINAL_MODEL_BYTES + FINAL_MODEL_ITEM_BYTES)
