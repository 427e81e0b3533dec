"""proxy.faults' connection helpers on real sockets: a reset is a TCP RST, a hang holds
the request unanswered then resets, a throttle paces an aiohttp response.

Servers listen on 127.0.0.1 with kernel-chosen ports. The clients of the reset
tests are raw streams: aiohttp's client retries an idempotent request once after
a reset, which would hide what the server did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from proxy.toxics import Throttle, hang, reset_connection
from tests.helpers import LOCALHOST

REQUEST = b"GET / HTTP/1.1\r\nHost: catalog\r\n\r\n"


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, LOCALHOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def aiohttp_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> (
    AsyncIterator[int]
):  # fmt: skip
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOCALHOST, 0)
    await site.start()
    try:
        assert runner.addresses
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def ask(port: int) -> AsyncIterator[asyncio.StreamReader]:
    """Send a request on a new connection; the reader of its answer."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(REQUEST)
        await writer.drain()
        yield reader
    finally:
        writer.close()


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def test_reset_connection_sends_a_tcp_reset_where_a_close_sends_an_end_of_stream() -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        reset_connection(writer.transport)

    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with raw_server(closes) as port, ask(port) as reader:
        assert await reader.read(65536) == b""
    async with raw_server(resets) as port, ask(port) as reader:
        with pytest.raises(ConnectionResetError):
            await reader.read(65536)


async def test_an_aiohttp_handler_resets_its_connection_instead_of_answering() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        reset_connection(request.transport)
        return web.Response(text="never sent")

    async with aiohttp_server(handler) as port, ask(port) as reader:
        with pytest.raises(ConnectionResetError):
            await reader.read(65536)


async def test_a_hang_holds_the_request_unanswered_for_its_duration_then_resets() -> None:
    seconds = 0.3

    async def handler(request: web.Request) -> web.StreamResponse:
        await hang(seconds, lambda: reset_connection(request.transport))
        return web.Response(text="never sent")

    async with aiohttp_server(handler) as port:
        start = time.monotonic()
        async with ask(port) as reader:
            with pytest.raises(ConnectionResetError):
                await reader.read(65536)  # returns any byte that came before the reset
        elapsed = time.monotonic() - start
    assert seconds <= elapsed < seconds + 2.0


async def test_a_throttle_paces_an_aiohttp_response_body() -> None:
    """40,000 bytes/s over 20,000 bytes: the last byte leaves (20,000 - 800)/40,000 =
    0.48 s after the first; the test allows 0.45 s to 2 s between the client seeing them."""
    rate, size = 40_000, 20_000
    payload = bytes(i % 251 for i in range(size))

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        throttle = Throttle(rate)
        for start in range(0, size, 8192):
            await throttle.write(payload[start : start + 8192], response.write)
        await response.write_eof()
        return response

    async with aiohttp_server(handler) as port, aiohttp.ClientSession() as client:
        received = bytearray()
        times: list[float] = []
        async with client.get(f"http://{LOCALHOST}:{port}/") as response:
            async for chunk in response.content.iter_any():
                times.append(time.monotonic())
                received += chunk
    assert bytes(received) == payload
    assert 0.45 <= times[-1] - times[0] < 2.0
    assert len(times) > 10  # it came in pieces, not in one burst
