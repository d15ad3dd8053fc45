"""Serving the API with uvicorn inside the node's own event loop.

We bind the socket ourselves so that a taken port is an ordinary OSError here, not uvicorn's
`sys.exit(1)` escaping through the node's loop, and so that port 0 has a known bound port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass
class ApiServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        """Finish in-flight requests (up to STOP_TIMEOUT_S), then close every connection."""
        if self.task.done():
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), STOP_TIMEOUT_S)
        except TimeoutError:
            self.server.force_exit = True
            await self.task


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The node owns SIGTERM and SIGINT; uvicorn must neither take nor re-raise them."""
        yield


def _bind(host: str, port: int) -> list[socket.socket]:
    """One socket per address of `host` (localhost may be ::1 and 127.0.0.1, as uvicorn would
    listen), all on the port the first one got."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos = list(dict.fromkeys(infos))
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, wanted in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(infos) > 1:  # :: must not also take 0.0.0.0
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            first_port = sockets[0].getsockname()[1] if len(sockets) > 1 else wanted[1]
            sock.bind((wanted[0], first_port, *wanted[2:]))
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise OSError(error.errno, f"the API cannot listen on {host}:{port}: {error}") from None
    return sockets


async def _serve(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exit_:  # uvicorn's way to give up; it must not end the node
        raise RuntimeError(f"the API server gave up (exit status {exit_.code})") from None
    finally:
        for sock in sockets:
            sock.close()


async def serve_api(app: FastAPI, host: str, port: int) -> ApiServer:
    """Start serving `app` as a task of the running loop; return once it accepts connections."""
    sockets = _bind(host, port)
    bound = int(sockets[0].getsockname()[1])
    config = uvicorn.Config(app, host=host, port=bound, log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(_serve(server, sockets), name=f"api:{bound}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()  # re-raises why it could not start
            raise RuntimeError("the API server stopped while starting")
        if loop.time() > deadline:
            server.force_exit = server.should_exit = True
            raise TimeoutError(f"the API did not start on {host}:{bound}")
        await asyncio.sleep(0.01)
    return ApiServer(server, task, bound)
