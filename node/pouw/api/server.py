"""Serving the API with uvicorn inside the node's own event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_S = 10.0


@dataclass
class ApiServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, timeout=STARTUP_TIMEOUT_S)


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        """The node owns the signals; uvicorn must not take them."""


async def serve_api(app: FastAPI, host: str, port: int) -> ApiServer:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.ensure_future(server.serve())
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()  # re-raises why it could not start (port taken, ...)
            raise RuntimeError("the API server stopped while starting")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the API did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    return ApiServer(server, task, bound)
