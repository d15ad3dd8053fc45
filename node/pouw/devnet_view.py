"""What a person sees of `pouw devnet`: a live panel while it runs, a summary table after."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pouw.blockchain.audit import audit_store
from pouw.devnet import DevnetProgress, DevnetResult, SingleNodeDevnet, task_from_name, with_epochs


def _panel(progress: DevnetProgress) -> Table:
    table = Table(title="PoUW devnet", show_header=False, min_width=60)
    table.add_row("phase", progress.phase)
    if progress.total_iterations:
        done = progress.iterations / progress.total_iterations
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        table.add_row(
            "training", f"[{bar}] {done:5.1%}  epoch {progress.task_epoch}/{progress.task_epochs}"
        )
    table.add_row(
        "miner loss / batch accuracy", f"{progress.loss:.4f} / {progress.batch_accuracy:.3f}"
    )
    table.add_row("chain height", str(progress.height))
    table.add_row(
        "blocks verified / rejected", f"{progress.blocks_verified} / {progress.blocks_rejected}"
    )
    return table


def run_devnet(
    task_name: str, epochs: int | None, data_dir: Path | None, console: Console
) -> dict[str, Any]:
    directory = data_dir or Path(tempfile.mkdtemp(prefix="pouw-devnet-"))
    network = SingleNodeDevnet(directory, with_epochs(task_from_name(task_name), epochs))
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    results: list[DevnetResult] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(network.run(stop))
        except BaseException as error:  # re-raised in the calling thread below
            failures.append(error)

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        with Live(_panel(network.progress), console=console, refresh_per_second=4) as live:
            while worker.is_alive():
                worker.join(timeout=0.25)
                live.update(_panel(network.progress))
    finally:
        signal.signal(signal.SIGINT, previous)
    if failures:
        raise failures[0]
    result = results[0]
    audit = audit_store(directory, seal_rules=())
    summary = Table(title="PoUW devnet summary")
    summary.add_column("")
    summary.add_column("")
    for key, value in result.as_json().items():
        summary.add_row(key, str(value))
    summary.add_row("chain verify", audit.describe())
    console.print(summary)
    report: dict[str, Any] = result.as_json()
    report["chain_verified"] = audit.ok
    return report
