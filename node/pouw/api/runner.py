"""`pouw node`: one node and its HTTP API in one event loop, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from pouw.api.app import create_app
from pouw.api.server import serve_api
from pouw.config import NodeConfig, check_api_exposure
from pouw.errors import InvalidTransaction, Reason
from pouw.node.node import PoUWNode
from pouw.roles import NodeRole

log = logging.getLogger(__name__)


async def run_node(config: NodeConfig, stop: asyncio.Event | None = None) -> None:
    check_api_exposure(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = PoUWNode(config.node_id, config.role, config=config)
    await node.start()
    api = await serve_api(
        create_app(node, api_token=config.api_token), config.host, config.api_port
    )
    try:
        if config.initial_stake > 0 and not _holds_ticket(node):
            await stake_when_funded(node, config.initial_stake, stop)
        if node.role == NodeRole.MINER and not stop.is_set():
            await node.start_mining()
        log.info(
            "node %s serving p2p on %s:%s and the API on %s:%s",
            config.node_id,
            config.host,
            node.network.port if node.network else config.port,
            config.host,
            api.port,
        )
        await stop.wait()
    finally:
        await api.stop()
        await node.stop()
        log.info("node %s stopped; its data dir is consistent", config.node_id)


async def stake_when_funded(node: PoUWNode, amount: float, stop: asyncio.Event) -> bool:
    """Buy the node's ticket as soon as its balance covers it; False when stopped first. Off
    devnet a node's key is random, so it holds nothing until someone (on Kubernetes, the
    faucet's owner) sends it coins: it waits for them, re-trying on each chain change, rather
    than failing its start."""
    changed = asyncio.Event()
    node.context.events.chain_changed.subscribe(lambda _update: changed.set())
    warned = False
    while not stop.is_set():
        changed.clear()
        try:
            ticket = node.stake_and_register(amount)
        except InvalidTransaction as error:
            if error.reason is not Reason.OVERSPEND:
                raise
            if not warned:
                log.warning(
                    "%s cannot stake %s yet (%s): it stakes once %s is funded",
                    node.node_id,
                    amount,
                    error.detail,
                    node.address,
                )
                warned = True
            await _first(changed.wait(), stop.wait())
            continue
        log.info("staked %s for %s: ticket %s", amount, node.role, ticket.ticket_id)
        return True
    return False


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _holds_ticket(node: PoUWNode) -> bool:
    return any(
        ticket.owner == node.address and ticket.role == node.role
        for ticket in node.chain.state.live_tickets()
    )
