"""What a settlement paid this node counts in its rewards, and a reorg that takes the settling
block away takes the count back: the payouts are the ledger's, no transaction carries them."""

from __future__ import annotations

from pathlib import Path

from tests.node.fakes import context
from tests.support.ledger import make_block, mine
from tests.support.settlement import BEST_M0, Ledger

from pouw.blockchain.transactions import TaskResult
from pouw.node.tally import ChainTally


def test_settlement_pay_is_counted_and_a_reorg_takes_it_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "chain")
    node = context(tmp_path / "node", name="m0")
    tally = ChainTally(node, lambda: ledger.chain.state)
    first, second, _ = ledger.evaluators()
    fork = ledger.chain.tip.hash
    results = [ledger.tx(key, TaskResult(ledger.task_id, BEST_M0)) for key in (first, second)]
    settling = mine(ledger.chain, results).connected[0]
    tally.count(settling, +1)
    paid = {p.recipient: p.amount for p in ledger.record.payouts}[node.address]
    assert node.counters.rewards_earned == paid > 0
    side = make_block(ledger.chain, parent=fork, spacing_ms=900)
    ledger.chain.add_block(side)
    ledger.chain.add_block(make_block(ledger.chain, parent=side.hash()))
    assert ledger.record.status == "open", "the settlement is reverted"
    tally.count(settling, -1)  # told after the whole reorg, as the node's ledger tells it
    assert node.counters.rewards_earned == 0
