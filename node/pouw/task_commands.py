"""`pouw task submit|status|model`: talking to a node's HTTP API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from pouw.api.client import ApiError, NodeClient

DEFAULT_URL = "http://127.0.0.1:8080"


def _client(node: str | None, token: str | None) -> NodeClient:
    return NodeClient(
        node or os.environ.get("POUW_API_URL", DEFAULT_URL),
        token if token is not None else os.environ.get("POUW_API_TOKEN"),
    )


def read_task_file(source: str) -> tuple[dict[str, Any], float, float]:
    """(spec mapping, reward, fee) from YAML/JSON: a plain task, or an MLTask manifest."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise click.ClickException(f"{source}: expected a mapping, got {type(document).__name__}")
    if "spec" in document and isinstance(document["spec"], dict):
        document = document["spec"]
    mapping = dict(document)
    reward = mapping.pop("reward", None)
    fee = mapping.pop("fee", 0.01)
    for ignored in ("network", "networkSelector", "minAccuracy"):
        mapping.pop(ignored, None)
    if reward is None:
        raise click.ClickException(f"{source}: the task needs a reward (coins paid into escrow)")
    return mapping, float(reward), float(fee)


node_option = click.option("--node", help=f"Node API URL (POUW_API_URL, default {DEFAULT_URL}).")
token_option = click.option("--token", help="Bearer token for writes (POUW_API_TOKEN).")


@click.group()
def task() -> None:
    """Submit tasks to a node and follow them."""


@task.command()
@click.argument("source")
@node_option
@token_option
def submit(source: str, node: str | None, token: str | None) -> None:
    """Pay for the task in SOURCE (a YAML/JSON file, or - for stdin); print its id."""
    spec, reward, fee = read_task_file(source)
    with _client(node, token) as client:
        try:
            click.echo(client.submit_task(spec, reward=reward, fee=fee))
        except (ApiError, ConnectionError) as error:
            raise click.ClickException(str(error)) from None


@task.command()
@click.argument("task_id")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON view.")
def status(task_id: str, node: str | None, as_json: bool) -> None:
    """Phase, per-miner progress, blocks and test accuracy of a task."""
    with _client(node, None) as client:
        try:
            view = client.task(task_id)
        except (ApiError, ConnectionError) as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(view))
        return
    console = Console()
    table = Table(title=f"task {view['task_id'][:16]}: {view['phase']}")
    for column in ("miner", "epoch", "iterations", "loss", "batch accuracy", "finished"):
        table.add_column(column)
    for entry in view["progress"]:
        table.add_row(
            entry["miner"][:14],
            f"{entry['epoch']}/{view['epochs']}",
            str(entry["iterations"]),
            f"{entry['loss']:.4f}" if entry["loss"] is not None else "-",
            f"{entry['accuracy']:.3f}" if entry["accuracy"] is not None else "-",
            "yes" if entry["finished"] else "",
        )
    console.print(table)
    console.print(
        f"blocks {view['blocks']}, test accuracy {view['test_accuracy']}, "
        f"model {'available' if view['model_available'] else 'not yet'} {view['message']}"
    )


@task.command()
@click.argument("task_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@node_option
def model(task_id: str, output: Path, node: str | None) -> None:
    """Download the task's best model (safetensors)."""
    with _client(node, None) as client:
        try:
            data = client.task_model(task_id)
        except (ApiError, ConnectionError) as error:
            raise click.ClickException(str(error)) from None
    output.write_bytes(data)
    click.echo(f"{output}: {len(data)} bytes")
