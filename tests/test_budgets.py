"""ByteBudget: a sender's share and the total, each charge under its key, released in full."""

from __future__ import annotations

from pouw.budgets import ByteBudget
from pouw.errors import Reason


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
