"""Validation and relay before training: a miner draws no nonces and pauses training while its
node's import backlog passes the bound or it catches up with a heavier peer."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import cast

import pytest
from tests.support.nodes import local_node

from pouw.network.imports import Imported, Importer
from pouw.network.messages import Blocks
from pouw.network.peers import Link
from pouw.node.backlog import IMPORT_BACKLOG_BOUND, Backlog, MiningHold, should_hold
from pouw.roles import NodeRole


@pytest.mark.parametrize(
    ("imports", "catching_up", "held"),
    [
        (0, False, False),
        (IMPORT_BACKLOG_BOUND, False, False),
        (IMPORT_BACKLOG_BOUND + 1, False, True),
        (0, True, True),
    ],
)
def test_the_hold_rule(imports: int, catching_up: bool, held: bool) -> None:
    assert should_hold(Backlog(imports, catching_up)) is held


def _hold(backlogs: list[Backlog], counted: list[str], **kwargs: float) -> MiningHold:
    """A hold that reads `backlogs` one call at a time, the last one for ever."""
    return MiningHold(
        lambda: backlogs.pop(0) if len(backlogs) > 1 else backlogs[0], counted.append, **kwargs
    )


def test_training_waits_until_the_backlog_drains() -> None:
    counted: list[str] = []
    backlogs = [Backlog(100, False)] * 5 + [Backlog(0, False)]
    hold = _hold(backlogs, counted, max_pause_s=60.0)
    hold.pause_training(threading.Event())
    assert backlogs == [Backlog(0, False)], "it polled until the backlog was below the bound"
    assert counted == ["training"]


def test_a_pause_is_bounded_so_a_flood_never_stops_a_miner_for_good() -> None:
    counted: list[str] = []
    hold = _hold([Backlog(100, True)], counted, max_pause_s=0.0)
    hold.pause_training(threading.Event())
    stop = threading.Event()
    stop.set()
    _hold([Backlog(100, True)], counted, max_pause_s=60.0).pause_training(stop)
    assert counted == ["training", "training"]


class _Idle:
    """An importer whose jobs do nothing: they only fill the queue until the worker runs."""

    async def judge(self, link: Link, body: Imported) -> None:
        return None

    def refused(self, link: Link, body: Imported) -> None:
        return None

    def failed(self, link: Link, body: Imported) -> None:
        return None


def test_a_miner_draws_no_nonces_while_its_import_queue_is_backed_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path, "miner", NodeRole.MINER)
        await node.start()
        try:
            network = node.network
            assert network is not None
            assert node.miner._template() is not None
            importer = cast(Importer, _Idle())
            for _ in range(IMPORT_BACKLOG_BOUND + 1):
                network._imports.put(cast(Link, None), Blocks([]), importer)
            assert node.miner._template() is None
            held = node.metrics.registry.get_sample_value(
                "pouw_mining_held_total", {"stage": "nonces"}
            )
            assert held == 1
            async with asyncio.timeout(30):
                while network.import_backlog():
                    await asyncio.sleep(0.01)
            assert node.miner._template() is not None, "drained: nonces again"
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_a_miner_draws_no_nonces_while_it_catches_up_with_a_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = local_node(tmp_path, "miner", NodeRole.MINER)
        await node.start()
        try:
            network = node.network
            assert network is not None
            network._sync._idle.clear()  # what Sync.start does for a peer with more work
            assert network.catching_up()
            assert node.miner._template() is None
            network._sync.stop()
            assert node.miner._template() is not None
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
