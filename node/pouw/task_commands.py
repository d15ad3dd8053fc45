"""`pouw task submit|status|model`: talking to a node's HTTP API through pouw.api.client only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from pouw.api.client import ApiError, NodeClient
from pouw.manifest import ManifestError, task_order

DEFAULT_URL = "http://127.0.0.1:8080"


def make_client(url: str, token: str | None) -> NodeClient:
    """Tests replace this to talk to an in-process app."""
    return NodeClient(url, token or None)


@contextmanager
def _talking(url: str, token: str | None) -> Iterator[NodeClient]:
    with make_client(url, token) as client:
        try:
            yield client
        except ApiError as error:
            raise click.ClickException(f"{url}: {error}") from None


def task_mapping(document: object, source: str = "task") -> tuple[dict[str, Any], float, float]:
    """(spec mapping, reward, fee) from a plain task mapping or an MLTask manifest (`spec:`)."""
    try:
        order = task_order(document)
    except ManifestError as error:
        raise click.ClickException(f"{source}: {error}") from None
    return order.spec, order.reward, order.fee


def read_task_file(source: str) -> tuple[dict[str, Any], float, float]:
    """`task_mapping` of a YAML or JSON file, or of stdin for `-`."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        document = yaml.safe_load(text)  # JSON is YAML
    except OSError as error:
        raise click.ClickException(f"{source}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise click.ClickException(f"{source}: not YAML or JSON: {error}") from None
    return task_mapping(document, source)


node_option = click.option(
    "--node",
    "url",
    envvar="POUW_API_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Node API URL [env POUW_API_URL].",
)
token_option = click.option(
    "--token", envvar="POUW_API_TOKEN", help="Bearer token for writes [env POUW_API_TOKEN]."
)


@click.group()
def task() -> None:
    """Submit tasks to a node and follow them."""


@task.command()
@click.argument("source")
@click.option("--request-id", help="Idempotency key: resubmitting with it pays only once.")
@node_option
@token_option
def submit(source: str, request_id: str | None, url: str, token: str | None) -> None:
    """Pay for the task in SOURCE (YAML/JSON task or MLTask manifest; - for stdin); print its id."""
    spec, reward, fee = read_task_file(source)
    with _talking(url, token) as client:
        click.echo(client.submit_task(spec, reward=reward, fee=fee, request_id=request_id))


@task.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task view as JSON.")
@node_option
@token_option
def status(task_id: str, as_json: bool, url: str, token: str | None) -> None:
    """Phase, per-miner progress, blocks and test accuracy of a task."""
    with _talking(url, token) as client:
        view = client.task(task_id)
    if as_json:
        click.echo(json.dumps(view))
        return
    Console().print(progress_table(view))
    accuracy = view.get("test_accuracy")
    click.echo(
        f"blocks {view.get('blocks', 0)}, "
        f"test accuracy {'-' if accuracy is None else f'{accuracy:.4f}'}, "
        f"model {'available' if view.get('model_available') else 'not yet'}"
        + (f"; {view['message']}" if view.get("message") else "")
    )


def progress_table(view: dict[str, Any]) -> Table:
    table = Table(title=f"task {str(view.get('task_id', ''))[:16]}: {view.get('phase', '?')}")
    for column in ("miner", "epoch", "iterations", "loss", "batch accuracy", "finished"):
        table.add_column(column)
    for entry in view.get("progress", []):
        table.add_row(
            str(entry.get("miner", ""))[:14],
            f"{entry.get('epoch', 0)}/{view.get('epochs', '?')}",
            str(entry.get("iterations", 0)),
            _number(entry.get("loss"), 4),
            _number(entry.get("accuracy"), 3),
            "yes" if entry.get("finished") else "",
        )
    return table


def _number(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


@task.command()
@click.argument("task_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="Where to write the safetensors file.",
)
@node_option
@token_option
def model(task_id: str, output: Path, url: str, token: str | None) -> None:
    """Download the task's best model (safetensors)."""
    with _talking(url, token) as client:
        data = client.task_model(task_id)
    try:
        output.write_bytes(data)
    except OSError as error:
        raise click.ClickException(f"{output}: {error.strerror or error}") from None
    click.echo(f"{output}: {len(data)} bytes")
