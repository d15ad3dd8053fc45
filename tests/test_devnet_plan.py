"""Planning a devnet: which node does what, and what each is told (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pouw.cli import main
from pouw.config import NodeConfig
from pouw.devnet import BUILTIN_TASKS, Devnet, node_environment, plan_nodes
from pouw.spec import AGGREGATORS


def test_the_last_miners_attack_and_are_told_so_by_a_devnet_only_setting(tmp_path: Path) -> None:
    plans = plan_nodes(8, byzantine=2, attack="scale")
    attackers = [plan.node_id for plan in plans if plan.attack is not None]
    assert attackers == ["miner-2", "miner-3"]
    by_id = {plan.node_id: plan for plan in plans}
    env = node_environment(by_id["miner-3"], tmp_path, plans[0].p2p_port)
    assert env["POUW_ATTACK"] == "scale"
    assert NodeConfig.from_env(env).attack == "scale"
    assert "POUW_ATTACK" not in node_environment(by_id["miner-0"], tmp_path, plans[0].p2p_port)


@pytest.mark.parametrize(
    ("byzantine", "attack", "message"),
    [(1, None, "name the attack"), (2, "noise", "at least one miner must be honest")],
)
def test_a_devnet_keeps_an_honest_miner_and_names_its_attack(
    byzantine: int, attack: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_nodes(6, byzantine, attack)


def test_the_aggregator_option_sets_the_tasks(tmp_path: Path) -> None:
    assert set(AGGREGATORS) == {"robust", "screened_mean", "median", "trimmed_mean", "krum", "mean"}
    devnet = Devnet(tmp_path, 7, BUILTIN_TASKS["iris"], aggregator="mean")
    assert devnet.task.aggregator == "mean" and devnet.task.miners == 3
    assert Devnet(tmp_path, 7, BUILTIN_TASKS["iris"]).task.aggregator == "robust"


def test_the_cli_refuses_a_byzantine_devnet_it_cannot_run() -> None:
    result = CliRunner().invoke(main, ["devnet", "--nodes", "6", "--byzantine", "1"])
    assert result.exit_code == 2 and "name the attack" in result.output
    result = CliRunner().invoke(
        main, ["devnet", "--nodes", "5", "--byzantine", "1", "--attack", "sign_flip"]
    )
    assert result.exit_code == 2 and "at least one miner must be honest" in result.output
    result = CliRunner().invoke(main, ["devnet", "--attack", "bribe"])
    assert result.exit_code == 2 and "--attack" in result.output
