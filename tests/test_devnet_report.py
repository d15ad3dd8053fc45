"""What `pouw devnet` reports about convergence, and the node count it calls too many."""

from __future__ import annotations

from pathlib import Path

from pouw.devnet import node_environment, plan_nodes
from pouw.devnet_report import (
    capacity_warning,
    chain_census,
    devnet_block_time_ms,
    suggested_max_nodes,
    tips_agree,
)
from tests.support.ledger import BOB, ledger_params, make_block, mine, open_chain


def test_more_nodes_than_the_cores_run_well_is_one_warning_line() -> None:
    assert capacity_warning(8, 2) is None
    warning = capacity_warning(16, 2)
    assert warning is not None and "\n" not in warning
    assert "16 nodes" in warning and "2 CPU cores" in warning
    assert f"at most {suggested_max_nodes(2)}" in warning
    assert capacity_warning(16, 4) is None


def test_the_block_time_grows_with_the_nodes_each_core_carries() -> None:
    assert devnet_block_time_ms(6, 16) == 1_000
    assert devnet_block_time_ms(8, 2) < devnet_block_time_ms(16, 2)
    assert devnet_block_time_ms(16, 2) == devnet_block_time_ms(32, 4)
    assert devnet_block_time_ms(6, 2) == 3_000, "within what a core runs well: 1 s a node"
    assert devnet_block_time_ms(16, 2) == 12_000, "overloaded cores: half as much again"


def test_every_node_gets_the_devnets_block_time(tmp_path: Path) -> None:
    plan = plan_nodes(5)[1]
    env = node_environment(plan, tmp_path, 1234, block_time_ms=4_000)
    assert env["POUW_BLOCK_TIME_MS"] == "4000"


def test_tips_agree_only_when_every_node_reports_the_same_tip() -> None:
    same = {"a": {"tip": "t1"}, "b": {"tip": "t1"}}
    assert tips_agree(same, 2)
    assert not tips_agree(same, 3), "a node that did not answer"
    assert not tips_agree({"a": {"tip": "t1"}, "b": {"tip": "t2"}}, 2)


def test_orphan_rate_counts_stored_blocks_off_the_heaviest_main_chain(tmp_path: Path) -> None:
    params = ledger_params()
    heavy = open_chain(tmp_path / "heavy", params)
    light = open_chain(tmp_path / "light", params)
    for _ in range(3):
        block = make_block(heavy)
        heavy.add_block(block)
        light.add_block(block)  # both store the shared blocks 1..3
    mine(heavy)
    mine(heavy)  # heavy: 6 stored (genesis and 5), all main
    light.add_block(make_block(light, miner=BOB))  # light: its own block 4, and the genesis
    for chain in (heavy, light):
        chain.store.close()
    census = chain_census(tmp_path, ["heavy", "light", "absent"])
    assert census["stored_blocks"] == 11
    assert census["final_height"] == 5
    assert census["orphan_rate"] == round(1 / 11, 3), "light's own block 4 is off it"
