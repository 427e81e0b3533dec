"""The inbound listener's gate on its own: it survives running out of file descriptors,
bounds the connections that wait for a first byte, and closes the connections a new mode
no longer admits."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from proxy import mtls
from proxy.httpserver import Listener, Request
from proxy.mtls import Gate
from tests.integration.meshkit import wait_until


async def answer(request: Request) -> None:
    request.respond(200, "", [("Content-Type", "text/plain")], b"ok")


@asynccontextmanager
async def gated(mode: list[str]) -> AsyncIterator[tuple[Listener, int]]:
    """A listener whose gate's mode is ``mode[0]`` at each new connection (no identity)."""
    listener = Listener(answer, gate=lambda: Gate(mode[0], None, None))
    port = await listener.start("127.0.0.1", 0)
    try:
        yield listener, port
    finally:
        await listener.stop(grace=0.1)


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer


async def test_running_out_of_file_descriptors_does_not_stop_the_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with gated(["permissive"]) as (_, port):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held: list[socket.socket] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
            # Each connection costs this process two descriptors (its end and the accepted
            # one): the listener soon cannot accept, and must not give up.
            for _ in range(4):
                try:
                    held.append(socket.create_connection(("127.0.0.1", port)))
                except OSError:
                    break
            # Let the loop try to accept, and fail, before the descriptors come back.
            await wait_until(
                lambda: any("cannot accept" in r.getMessage() for r in caplog.records),
                "the listener says it cannot accept",
            )
        finally:
            for sock in held:
                sock.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        answer = await asyncio.wait_for(get(port), timeout=mtls.ACCEPT_PAUSE + 5)
        assert answer.startswith(b"HTTP/1.1 200")


async def test_connections_that_send_nothing_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mtls, "MAX_ADMITTING", 3)
    async with gated(["permissive"]) as (listener, port):
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            await wait_until(lambda: len(listener._admitting) == 3, "three wait for a byte")
            extra = socket.create_connection(("127.0.0.1", port))
            await wait_until(lambda: listener.refusals.counts["busy"] == 1, "the fourth refused")
            extra.close()
        finally:
            for sock in silent:
                sock.close()
        await wait_until(lambda: not listener._admitting, "the silent ones are let go")
        assert (await get(port)).startswith(b"HTTP/1.1 200")


async def test_a_stricter_mode_closes_the_connections_it_no_longer_admits() -> None:
    mode = ["permissive"]
    async with gated(mode) as (listener, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        mode[0] = "strict"
        listener.enforce(Gate("strict", None, None))
        assert await asyncio.wait_for(reader.read(), timeout=5) == b"", "closed"
        writer.close()
