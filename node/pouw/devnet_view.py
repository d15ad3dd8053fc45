"""What a person sees of `pouw devnet`: a live panel while it runs, a summary table after."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from pouw.devnet import Devnet, DevnetError, Snapshot, task_from_name, with_epochs
from pouw.devnet_report import chain_census, verify_data_dirs

RUN_TIMEOUT_S = 600.0


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _nodes_table(snapshot: Snapshot) -> Table:
    table = Table(title=f"PoUW devnet: {snapshot.phase}  ({snapshot.seconds:.0f} s)")
    for column in ("node", "role", "height", "peers", "mined", "verified / rejected", "doing"):
        table.add_column(column)
    for node_id, status in snapshot.statuses.items():
        stats = status.get("stats", {})
        attack = status.get("attack")
        table.add_row(
            node_id,
            status.get("role", "") + (f" [red]({attack})[/]" if attack else ""),
            str(status.get("blockchain_height", "")),
            str(status.get("peer_count", "")),
            str(stats.get("blocks_mined", "")),
            f"{stats.get('blocks_verified', 0)} / {stats.get('blocks_rejected', 0)}",
            status.get("mining", ""),
        )
    return table


def _task_table(task: dict[str, Any], names: dict[str, str]) -> Table:
    table = Table(title=f"task {task['task_id'][:16]}: {task['phase']}  {task.get('message', '')}")
    for column in ("miner", "progress", "epoch", "loss", "batch accuracy", "final model"):
        table.add_column(column)
    epochs = max(1, task.get("epochs", 1))
    for entry in task.get("progress", []):
        done = min(1.0, entry["epoch"] / epochs) if not entry["finished"] else 1.0
        bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
        table.add_row(
            names.get(entry["miner"], entry["miner"][:12]),
            f"[{bar}] {done:4.0%}",
            f"{entry['epoch']}/{epochs}",
            _number(entry["loss"]),
            _number(entry["accuracy"], 3),
            "yes" if entry["finished"] else "",
        )
    return table


def _panel(snapshot: Snapshot) -> Group:
    names = {s.get("address", ""): node_id for node_id, s in snapshot.statuses.items()}
    parts: list[Table] = [_nodes_table(snapshot)]
    if snapshot.task is not None:
        parts.append(_task_table(snapshot.task, names))
    return Group(*parts)


def run_devnet(
    task_name: str,
    nodes: int,
    epochs: int | None,
    data_dir: Path | None,
    console: Console,
    *,
    byzantine: int = 0,
    attack: str | None = None,
    aggregator: str | None = None,
) -> dict[str, Any]:
    root = data_dir or Path(tempfile.mkdtemp(prefix="pouw-devnet-"))
    devnet = Devnet(
        root,
        nodes,
        with_epochs(task_from_name(task_name), epochs),
        byzantine=byzantine,
        attack=attack,
        aggregator=aggregator,
    )
    report: dict[str, Any]
    interrupted = False
    with Live(_panel(devnet.snapshot), console=console, refresh_per_second=4) as live:
        try:
            report = devnet.run(lambda snapshot: live.update(_panel(snapshot)), RUN_TIMEOUT_S)
        except KeyboardInterrupt:
            interrupted = True
            report = devnet.summary()
        except DevnetError as error:
            console.print(f"[red]devnet failed:[/] {error}")
            report = devnet.summary()
            report["error"] = str(error)
        finally:
            devnet.stop()
    report.update(chain_census(root, devnet.processes))
    verdicts = verify_data_dirs(root, devnet.processes)
    report["chain_verified"] = all(v.startswith("ok") for v in verdicts.values())
    if interrupted:
        report["task_state"] = "interrupted"
    summary = Table(title="PoUW devnet summary")
    summary.add_column("")
    summary.add_column("")
    for key, value in report.items():
        summary.add_row(key, str(value))
    for node_id, verdict in verdicts.items():
        summary.add_row(f"chain verify {node_id}", verdict)
    console.print(summary)
    return report
