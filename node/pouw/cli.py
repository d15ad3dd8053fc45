"""The `pouw` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from pouw.config import ATTACKS
from pouw.spec import AGGREGATORS
from pouw.task_commands import task

if TYPE_CHECKING:
    from pouw.blockchain.transactions import Payout

stderr = Console(stderr=True)

BENCHMARKS = ("attacks", "consensus", "ledger", "mining", "network", "operator")


@click.group()
@click.version_option(package_name="pouw")
def main() -> None:
    """PoUW: a blockchain whose mining is machine-learning training."""


@main.group()
def chain() -> None:
    """Start a chain; inspect and check a node's stored chain."""


@chain.command("init")
@click.option("--chain-id", required=True, help="The new chain's id (not pouw-devnet...).")
@click.option(
    "--alloc",
    "allocs",
    multiple=True,
    metavar="ADDRESS=COINS",
    help="Fund an address at genesis (repeatable).",
)
@click.option(
    "--fund-key",
    "fund_keys",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Fund the key in this seed file (a node key, a faucet) with --fund-coins (repeatable).",
)
@click.option(
    "--fund-coins",
    default=1_000_000.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="What each --fund-key gets.",
)
@click.option(
    "--genesis-time-ms",
    type=click.IntRange(min=0),
    help="The genesis timestamp (Unix ms); default: now, fixed in the file.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The genesis file to write (never overwritten); nodes read it from POUW_GENESIS_FILE.",
)
def chain_init(
    chain_id: str,
    allocs: tuple[str, ...],
    fund_keys: tuple[Path, ...],
    fund_coins: float,
    genesis_time_ms: int | None,
    out: Path,
) -> None:
    """Write the genesis file of a new chain, with explicit allocations; print its hash."""
    import time

    from pouw.blockchain.genesis import genesis_hash, new_genesis, write_genesis
    from pouw.blockchain.transactions import Payout, coins
    from pouw.config import ConfigError
    from pouw.crypto import KeyPair

    allocations = [_allocation(text) for text in allocs]
    for key_file in fund_keys:
        address = KeyPair.from_seed(key_file.read_bytes()).address
        allocations.append(Payout(recipient=address, amount=coins(fund_coins)))
    when = genesis_time_ms if genesis_time_ms is not None else int(time.time() * 1000)
    try:
        params = new_genesis(chain_id, allocations, when)
        write_genesis(out, params)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"genesis of {chain_id} written to {out}: {genesis_hash(params)}")


def _allocation(text: str) -> Payout:
    from pouw.blockchain.transactions import Payout, coins

    address, separator, amount = text.partition("=")
    try:
        value = coins(float(amount))
    except ValueError:
        value = 0
    if not separator or value <= 0:
        raise click.BadParameter(f"{text!r} is not ADDRESS=COINS (COINS > 0)", param_hint="--alloc")
    return Payout(recipient=address.strip(), amount=value)


@chain.command("verify")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's data dir (POUW_DATA_DIR).",
)
def chain_verify(data_dir: Path) -> None:
    """Re-validate a stored chain from genesis; exit 1 naming the first bad block."""
    from pouw.blockchain.audit import audit_store
    from pouw.mining.claims import ClaimRule

    try:
        report = audit_store(data_dir, claim_rule=ClaimRule())
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.describe())
    if not report.ok:
        sys.exit(1)


@main.command()
def node() -> None:
    """Run one node from POUW_* variables (the container's command)."""
    import asyncio
    import logging

    from pouw.config import ConfigError, NodeConfig

    try:
        config = NodeConfig.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    logging.basicConfig(
        level=config.log_level,
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    from pouw.api.runner import run_node

    try:
        asyncio.run(run_node(config))
    except ConfigError as error:  # the genesis file or the key: one line, no traceback
        raise click.ClickException(str(error)) from None


@main.command()
@click.option(
    "--nodes",
    default=6,
    show_default=True,
    type=click.IntRange(min=5, max=16),
    help="Processes: supervisor, verifier, evaluator, client and NODES-4 miners.",
)
@click.option(
    "--task",
    "task_name",
    default="digits",
    show_default=True,
    help="digits, iris, wine, breast_cancer, or a task spec file (YAML/JSON).",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the task's epochs.")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the nodes keep their data dirs (default: a fresh temporary directory).",
)
@click.option(
    "--byzantine",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the miners attack (the last ones; at least one miner stays honest).",
)
@click.option(
    "--attack",
    type=click.Choice(ATTACKS),
    help="What the Byzantine miners do (required with --byzantine).",
)
@click.option(
    "--aggregator",
    type=click.Choice(AGGREGATORS),
    help="The task's aggregator of peers' updates; mean turns robust aggregation off.",
)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on stdout.")
def devnet(
    nodes: int,
    task_name: str,
    epochs: int | None,
    data_dir: Path | None,
    byzantine: int,
    attack: str | None,
    aggregator: str | None,
    as_json: bool,
) -> None:
    """Run a whole network on this machine that trains a client's task while it mines.

    With --byzantine K the last K miners attack (POUW_ATTACK, a setting only devnet chains
    accept): the summary shows the detections, slashed stake and reputations."""
    from pouw.devnet import plan_nodes
    from pouw.devnet_report import capacity_warning, machine_cores
    from pouw.devnet_view import run_devnet

    try:
        plan_nodes(nodes, byzantine, attack)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    warning = capacity_warning(nodes, machine_cores())
    if warning is not None:
        click.echo(warning, err=True)  # one line, never wrapped
    result = run_devnet(
        task_name,
        nodes,
        epochs,
        data_dir,
        stderr,
        byzantine=byzantine,
        attack=attack,
        aggregator=aggregator,
    )
    if as_json:
        click.echo(json.dumps(result))
    if result["task_state"] != "completed" or not result["chain_verified"]:
        sys.exit(1)


@main.command()
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on stdout.")
def bench(name: str, as_json: bool) -> None:
    """Run a benchmark; its baseline is measured in the same process."""

    def report(line: str) -> None:
        stderr.print(f"[dim]bench {name}:[/] {line}")

    result: dict[str, Any]
    if name == "attacks":
        from pouw.bench import attacks

        result = attacks.run(report)
        stderr.print(attacks.results_table(result))
    elif name == "consensus":
        from pouw.bench import consensus

        result = consensus.run(report)
    elif name == "ledger":
        from pouw.bench import ledger

        result = ledger.run(report)
    elif name == "mining":
        from pouw.bench import mining

        result = mining.run(report)
    elif name == "network":
        from pouw.bench import network

        result = network.run(report)
    elif name == "operator":
        from pouw.bench import operator

        try:
            result = operator.run(report)
        except operator.Unavailable as error:
            # click.echo, not the rich console: one line, never wrapped.
            click.echo(f"{error}", err=True)
            sys.exit(2)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>22}: {value}")


main.add_command(task)

if __name__ == "__main__":
    main()
