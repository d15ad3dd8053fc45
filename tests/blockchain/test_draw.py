"""The ledger draws each task itself, at `draw_delay` blocks after the task, from the tickets
confirmed with it: no later ticket takes part, the seed is a block mined after both, and a
reorg that replaces the seeding block redraws."""

from __future__ import annotations

from pathlib import Path

from tests.support.ledger import (
    ALICE,
    BOB,
    CAROL,
    MINER,
    ledger_params,
    make_block,
    mine,
    open_chain,
    signed,
)

from pouw.blockchain.draw import draw_seed
from pouw.blockchain.transactions import COIN, BuyTicket, PayForTask
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

SPEC = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), miners=2)


def test_a_task_is_drawn_at_its_delay_from_the_tickets_confirmed_with_it(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params(draw_delay=2))
    buy = [signed(key, BuyTicket(NodeRole.MINER, COIN), 0) for key in (ALICE, BOB)]
    mine(chain, buy)
    pay = signed(CAROL, PayForTask(SPEC, 100 * COIN), 0)
    mine(chain, [pay])
    task_id = pay.txid()
    late = signed(MINER, BuyTicket(NodeRole.MINER, COIN), 0)
    mine(chain, [late])  # height 3: after the task, so never drawn for it
    assert chain.state.tasks[task_id].drawn is None
    mine(chain)  # height 4 = 2 + draw_delay: it seeds the draw
    drawn = chain.state.tasks[task_id].drawn
    assert drawn is not None
    assert drawn.seed == draw_seed(task_id, chain.tip.hash) and drawn.height == 4
    assert {t.owner for t in drawn.miners} == {ALICE.address, BOB.address}
    assert late.txid() not in {t.ticket_id for t in drawn.miners}


def test_a_reorg_that_replaces_the_seeding_block_redraws(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params(draw_delay=1))
    mine(chain, [signed(key, BuyTicket(NodeRole.MINER, COIN), 0) for key in (ALICE, BOB, CAROL)])
    pay = signed(MINER, PayForTask(SPEC, 100 * COIN), 0)
    mine(chain, [pay])
    fork = chain.tip.hash
    mine(chain)
    first = chain.state.tasks[pay.txid()].drawn
    assert first is not None
    side = make_block(chain, parent=fork, spacing_ms=900)
    chain.add_block(side)
    chain.add_block(make_block(chain, parent=side.hash()))  # heavier: the seeding block goes
    second = chain.state.tasks[pay.txid()].drawn
    assert second is not None and second.seed != first.seed
    assert second.seed == draw_seed(pay.txid(), side.hash())
