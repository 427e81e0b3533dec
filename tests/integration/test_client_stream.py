"""devmesh.client's event streams against a real server on port 0 that ends them: whatever
way a stream ends, its reader gets a ``DevmeshError`` (never an aiohttp exception)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient, ControlPlaneUnavailable, Endpoint
from devmesh.errors import DevmeshError

Ending = Callable[[web.Request, web.WebSocketResponse], Awaitable[None]]


@asynccontextmanager
async def stream_server(ending: Ending) -> AsyncIterator[Endpoint]:
    """A server whose ``/v1/events`` sends one status, then ends the stream by ``ending``."""

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "services": []})
        await ending(request, ws)
        return ws

    app = web.Application()
    app.router.add_get("/v1/events", events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Endpoint(f"http://127.0.0.1:{port}", "token")
    finally:
        await runner.cleanup()


async def close(request: web.Request, ws: web.WebSocketResponse) -> None:
    await ws.close()


async def drop(request: web.Request, ws: web.WebSocketResponse) -> None:
    assert request.transport is not None
    request.transport.abort()  # the connection breaks: no close frame


async def break_protocol(request: web.Request, ws: web.WebSocketResponse) -> None:
    assert request.transport is not None
    request.transport.write(b"\x8f\x00")  # a frame of a reserved opcode
    await ws.receive()  # until the client hangs up


async def garble(request: web.Request, ws: web.WebSocketResponse) -> None:
    await ws.send_str("not json")
    await ws.close()


async def read_into(received: list[dict[str, object]], endpoint: Endpoint) -> None:
    """Every event of the stream into ``received``, until it ends."""
    async with ControlPlaneClient(endpoint) as client:
        async for event in client.events():
            received.append(event)


@pytest.mark.parametrize(
    ("ending", "expected", "words"),
    [
        (close, ControlPlaneUnavailable, "closed the stream /v1/events"),
        (drop, ControlPlaneUnavailable, "closed the stream /v1/events"),
        (break_protocol, ControlPlaneUnavailable, "the stream /v1/events from the control plane"),
        (garble, DevmeshError, "a message on /v1/events that is not a JSON object"),
    ],
)
async def test_a_stream_that_ends_is_a_devmesh_error(
    ending: Ending, expected: type[DevmeshError], words: str
) -> None:
    received: list[dict[str, object]] = []
    async with stream_server(ending) as endpoint:
        with pytest.raises(expected) as caught:
            await read_into(received, endpoint)
    assert received == [{"type": "status", "services": []}], "what came before the end"
    assert words in caught.value.message
    assert caught.value.hint
