"""uvicorn for real on 127.0.0.1, inside the test's event loop."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest

from pouw.api.app import create_app
from pouw.api.server import serve_api
from tests.api.fake_node import FakeNode


def test_serves_on_a_free_port_and_stops() -> None:
    async def scenario() -> None:
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        server = await serve_api(create_app(FakeNode(), api_token=None), "127.0.0.1", 0)
        assert server.port > 0
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/status")
                assert response.json()["node_id"] == "fake"
            # the node keeps its signals
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        finally:
            await server.stop()
        assert server.task.done()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        await server.stop()  # twice is harmless

    asyncio.run(scenario())


def test_localhost_is_served_on_each_of_its_addresses() -> None:
    async def scenario() -> None:
        server = await serve_api(create_app(FakeNode(), api_token=None), "localhost", 0)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/health")
                assert response.status_code == 200
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_taken_port_is_an_oserror_not_an_exit() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(OSError, match="cannot listen"):
                await serve_api(create_app(FakeNode(), api_token=None), "127.0.0.1",
                                taken.getsockname()[1])  # fmt: skip

    asyncio.run(scenario())
