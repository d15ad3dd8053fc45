"""What a settlement paid this node counts in its rewards, and a reorg that takes the settling
block away takes the count back: the payouts are the ledger's, no transaction carries them. A
task that leaves `open` (settled by a majority, or refunded) lets go of its final models' bytes;
a reorg that reopens it takes back those left on disk."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tests.node.fakes import context
from tests.support.ledger import make_block, mine
from tests.support.settlement import BEST_M0, M0, M1, TASK_ID, Ledger, ranking

from pouw.blockchain.block import Block
from pouw.blockchain.transactions import TaskResult
from pouw.crypto import KeyPair, sha256
from pouw.node.context import NodeContext
from pouw.node.intake import restore_models
from pouw.node.items import FinalModel, sign_final_model
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


def _hold_models(node: NodeContext) -> dict[str, FinalModel]:
    """M0's and M1's final models held by the node (their hashes as the ranking names them)."""
    finals = {}
    for miner in (M0, M1):
        unsigned = FinalModel(
            TASK_ID, miner.public_key, sha256(miner.public_key), b"bytes of " + miner.public_key, 1
        )
        finals[miner.address] = sign_final_model(miner, node.params.chain_id, unsigned)
        assert node.tasks.store_model(finals[miner.address]) is None
    return finals


def _on_disk(node: NodeContext) -> set[bytes]:
    return {final.model_hash for final in node.tasks.stored_models(TASK_ID)}


def test_a_refunded_task_frees_its_final_models_bytes_and_files(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "chain")
    node = context(tmp_path / "node")
    tally = ChainTally(node, lambda: ledger.chain.state)
    _hold_models(node)
    while ledger.record.status == "open":
        assert node.tasks.model_budget.used > 0, "the models are held while the task is open"
        for block in mine(ledger.chain).connected:
            tally.count(block, +1)
    assert ledger.record.status == "refunded"
    assert node.tasks.model_budget.used == 0 and node.tasks.of(TASK_ID).final_models == {}
    assert _on_disk(node) == set()


def _send_result(ledger: Ledger, tally: ChainTally, evaluator: KeyPair) -> Block:
    """A block with `evaluator`'s result ranking M0's model alone, counted."""
    result = ledger.tx(evaluator, TaskResult(ledger.task_id, ranking((M0, 0.9))))
    (block,) = mine(ledger.chain, [result]).connected
    tally.count(block, +1)
    return block


def test_a_majority_settlement_frees_the_bytes_and_a_reorg_reopening_it_takes_back_the_ranked(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "chain")
    node = context(tmp_path / "node")
    tally = ChainTally(node, lambda: ledger.chain.state, partial(restore_models, node))
    finals = _hold_models(node)
    first, second, _ = ledger.evaluators()
    fork = ledger.chain.tip.hash
    _send_result(ledger, tally, first)
    assert ledger.record.status == "open", "one of three evaluators settles nothing"
    assert set(node.tasks.of(TASK_ID).final_models) == {M0.address, M1.address}
    settling = _send_result(ledger, tally, second)
    assert ledger.record.status == "completed"
    assert node.tasks.model_budget.used == 0
    assert _on_disk(node) == {finals[M0.address].model_hash}, "the unranked model is deleted"
    parent = fork
    while ledger.record.status != "open":  # a heavier branch without the results
        side = make_block(ledger.chain, parent=parent, spacing_ms=900)
        ledger.chain.add_block(side)
        parent = side.hash()
    tally.count(settling, -1)  # told after the whole reorg, as the node's ledger tells it
    (restored,) = node.tasks.of(TASK_ID).final_models.values()
    assert node.tasks.with_bytes(restored) == finals[M0.address]
    assert node.tasks.model_budget.used > 0
