"""`pouw node`: one node and its HTTP API in one event loop, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal

from pouw.api.app import create_app
from pouw.api.server import serve_api
from pouw.config import NodeConfig
from pouw.node.node import PoUWNode
from pouw.roles import NodeRole

log = logging.getLogger(__name__)


async def run_node(config: NodeConfig, stop: asyncio.Event | None = None) -> None:
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
            ticket = node.stake_and_register(config.initial_stake)
            log.info(
                "staked %s for %s: ticket %s", config.initial_stake, node.role, ticket.ticket_id
            )
        if node.role == NodeRole.MINER:
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


def _holds_ticket(node: PoUWNode) -> bool:
    return any(
        ticket.owner == node.address and ticket.role == node.role
        for ticket in node.chain.state.live_tickets()
    )
