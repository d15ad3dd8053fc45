"""How a task's escrow is paid out when its evaluator closes it.

Miners share MINER_PERCENT by rank (weights k, k-1, ..., 1 for k ranked miners); supervisors,
verifiers and evaluators each share their role's percentage equally. A role with nobody drawn
leaves its share to the miners; rounding remainders go to the best miner. Block rewards are
separate (each block's first transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from pouw.blockchain.transactions import Payout

MINER_PERCENT = 60
SUPERVISOR_PERCENT = 15
VERIFIER_PERCENT = 15
EVALUATOR_PERCENT = 10


def split_escrow(
    escrow: int,
    ranked_miners: Sequence[str],
    supervisors: Sequence[str],
    verifiers: Sequence[str],
    evaluators: Sequence[str],
) -> tuple[Payout, ...]:
    if not ranked_miners:
        raise ValueError("a task closes with at least one ranked miner")
    amounts: dict[str, int] = {}

    def pay(address: str, amount: int) -> None:
        amounts[address] = amounts.get(address, 0) + amount

    miners_share = escrow
    for percent, members in (
        (SUPERVISOR_PERCENT, supervisors),
        (VERIFIER_PERCENT, verifiers),
        (EVALUATOR_PERCENT, evaluators),
    ):
        if members:
            share = escrow * percent // 100
            miners_share -= share
            each = share // len(members)
            for address in members:
                pay(address, each)
            miners_share += share - each * len(members)
    weights = list(range(len(ranked_miners), 0, -1))
    total_weight = sum(weights)
    paid = 0
    for address, weight in zip(ranked_miners, weights, strict=True):
        amount = miners_share * weight // total_weight
        pay(address, amount)
        paid += amount
    pay(ranked_miners[0], miners_share - paid)
    return tuple(Payout(address, amount) for address, amount in amounts.items() if amount > 0)
