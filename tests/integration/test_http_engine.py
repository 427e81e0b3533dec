"""The sidecar's HTTP/1.1 engine on raw sockets, the sidecar a black box (a process of the
data plane ``$DEVMESH_DATAPLANE`` picks, linked to a stand-in control plane).

    raw client -> sidecar inbound listener -> a raw upstream that records every byte

What a hand-written client can send that a library would not (smuggling
attempts, oversized heads, slow heads, pipelined requests) and what a
hand-written upstream can answer (interim 1xx, close-delimited bodies, a
keep-alive connection closed under the sidecar's feet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import proxy.httpserver
from tests.helpers import LOCALHOST, wait_for
from tests.integration.standin import SidecarUnderTest, peers_of, standin, standin_sidecar

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RawUpstream:
    """An app that answers each request head it reads with ``answer`` and keeps every byte."""

    answer: bytes = OK
    close_after: bool = False
    whole_chunked: bool = False
    """Read a chunked body to its last chunk before answering (else a chunked body is left
    unread)."""
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    port: int = 0

    @property
    def requests(self) -> int:
        return bytes(self.received).count(b" HTTP/1.")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += head
                length = _content_length(head)
                if length:
                    self.received += await reader.readexactly(length)
                elif self.whole_chunked and b"chunked" in head.lower():
                    await self._read_chunked(reader)
                writer.write(self.answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _read_chunked(self, reader: asyncio.StreamReader) -> None:
        """Keep a chunked body's bytes, up to its last chunk and trailer."""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            self.received += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    self.received += line
                self.received += line
                return
            self.received += await reader.readexactly(size + 2)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@asynccontextmanager
async def inbound(tmp_path: Path, upstream: RawUpstream) -> AsyncIterator[SidecarUnderTest]:
    server = await asyncio.start_server(upstream.serve, LOCALHOST, 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        async with (
            standin() as plane,
            standin_sidecar(plane, tmp_path, service="catalog", app_port=upstream.port) as sidecar,
        ):
            yield sidecar
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:  # noqa: ASYNC109
    """Send ``data``, then read until the sidecar closes the connection."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def first_head(answer: bytes) -> bytes:
    """The head of the first response in ``answer``, lower-cased: header names (and the
    tokens of ``Connection`` and ``Transfer-Encoding``) are case-insensitive."""
    return answer.partition(b"\r\n\r\n")[0].lower()


async def one_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head + await reader.readexactly(_content_length(head))


# -- requests the sidecar refuses, and never forwards ---------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
            id="content-length-and-chunked",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"400",
            id="two-content-lengths",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
            b"400",
            id="bad-chunk-size",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", b"400", id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", b"400", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", b"400", id="bare-lf"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: "
            + b"a" * (proxy.httpserver.MAX_HEAD_BYTES + 10)
            + b"\r\n\r\n",
            b"431",
            id="head-too-large",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(proxy.httpserver.MAX_HEADERS + 1))
            + b"\r\n",
            b"431",
            id="too-many-headers",
        ),
    ],
)
async def test_a_request_the_parser_refuses_is_answered_and_never_forwarded(
    tmp_path: Path, request_bytes: bytes, status: bytes
) -> None:
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        answer = await exchange(sidecar.ports.inbound, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:120]
    assert b"connection: close" in first_head(answer)
    assert b"x-devmesh-error:" in first_head(answer)
    assert upstream.received == b"", "the upstream saw bytes of a refused request"


async def test_a_head_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    # The head timeout of a process is its own (``HEAD_TIMEOUT``, 10 s): the test waits it out.
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # and nothing more
            answer = await asyncio.wait_for(reader.read(), proxy.httpserver.HEAD_TIMEOUT + 5)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"x-devmesh-error: header-timeout" in first_head(answer)
    assert upstream.received == b""


async def test_an_idle_keep_alive_connection_gets_no_408(tmp_path: Path) -> None:
    # Idle longer than the process's own head timeout (``HEAD_TIMEOUT``, 10 s).
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            writer.write(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await one_answer(reader)).endswith(b"ok")
            # Idle between requests (longer than the head timeout): not a slow head.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), proxy.httpserver.HEAD_TIMEOUT + 1)
            writer.write(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await one_answer(reader)).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


async def test_a_chunked_body_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    # The process's own limit (``MAX_BODY``, 64 MiB), passed by one MiB; the app answers
    # only a body it read to its last chunk.
    upstream = RawUpstream(whole_chunked=True)
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        piece = 1 << 20
        chunk = b"%x\r\n%s\r\n" % (piece, b"a" * piece)
        chunks = proxy.httpserver.MAX_BODY // piece + 1
        try:
            answer = await exchange(
                sidecar.ports.inbound,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk * chunks
                + b"0\r\n\r\n",
                timeout=30,
            )
        except ConnectionResetError:  # it stopped reading and closed: no answer at all
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert b"0\r\n\r\n" not in bytes(upstream.received), "the upstream got a body that looks whole"


# -- what a well-formed exchange looks like ----------------------------------------------


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            writer.write(
                b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            answers = [await asyncio.wait_for(one_answer(reader), 5) for _ in range(3)]
        finally:
            writer.close()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    sent = bytes(upstream.received)
    assert sent.index(b"GET /1") < sent.index(b"POST /2") < sent.index(b"GET /3")
    assert b"\r\n\r\nabc" in sent


async def test_an_http_1_0_client_gets_a_close_delimited_answer(tmp_path: Path) -> None:
    upstream = RawUpstream(
        answer=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        answer = await exchange(sidecar.ports.inbound, b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert body == b"hello"


async def test_an_interim_100_from_the_upstream_is_not_taken_for_the_answer(
    tmp_path: Path,
) -> None:
    upstream = RawUpstream(answer=b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        answer = await exchange(
            sidecar.ports.inbound, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert answer.endswith(b"ok")


async def test_a_close_delimited_upstream_body_arrives_whole(tmp_path: Path) -> None:
    upstream = RawUpstream(
        answer=b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", close_after=True
    )
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"transfer-encoding: chunked" in first_head(head), (
                "an unknown length goes on chunked"
            )
            body = b""
            while not body.endswith(b"0\r\n\r\n"):
                body += await asyncio.wait_for(reader.read(100), 5)
        finally:
            writer.close()
    assert b"until the end" in body


async def test_a_keep_alive_connection_the_upstream_closed_is_not_a_failure(
    tmp_path: Path,
) -> None:
    # The app answers and closes without saying so: the pooled connection is dead when
    # the next request comes, and the sidecar must not answer that request with a 503.
    upstream = RawUpstream(close_after=True)
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            for i in range(5):
                writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
                answer = await asyncio.wait_for(one_answer(reader), 5)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:120]
        finally:
            writer.close()
    assert upstream.requests == 5


async def test_a_caller_gone_before_the_answer_leaves_nothing_running(tmp_path: Path) -> None:
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        _, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        caller_port = writer.get_extra_info("sockname")[1]
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        writer.close()
        await sidecar.wait_records(1)
        # Nothing left running for it: the sidecar closed its end of that connection.
        inbound_port = sidecar.ports.inbound
        await wait_for(
            lambda: caller_port not in peers_of(inbound_port),
            what="the sidecar to close its end of the connection the caller left",
        )


async def test_an_upgrade_request_is_answered_as_a_plain_one_then_the_connection_closes(
    tmp_path: Path,
) -> None:
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        answer = await exchange(
            sidecar.ports.inbound,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"not http at all",
        )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert b"connection: close" in first_head(answer), "the answer to the upgrade request"
    sent = bytes(upstream.received).lower()
    assert b"upgrade" not in sent, "hop-by-hop: the upgrade is not passed on"
    assert b"not http" not in sent


async def test_a_caller_that_half_closes_after_its_request_gets_the_answer(
    tmp_path: Path,
) -> None:
    upstream = RawUpstream()
    async with inbound(tmp_path, upstream) as sidecar:
        assert sidecar.ports.inbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 5)  # ends: the sidecar closes
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"ok")


async def test_an_upstream_may_answer_while_the_request_body_still_streams(
    tmp_path: Path,
) -> None:
    """Full duplex: the app sends its head first, then echoes the body as it comes."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        left = _content_length(head)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while left:
            piece = await reader.read(left)
            left -= len(piece)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            standin() as plane,
            standin_sidecar(plane, tmp_path, service="catalog", app_port=port) as sidecar,
        ):
            assert sidecar.ports.inbound is not None
            reader, writer = await asyncio.open_connection(LOCALHOST, sidecar.ports.inbound)
            try:
                writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200"), "the head came before any body"
                writer.write(b"0123456789")
                echoed = b""
                while not echoed.endswith(b"0\r\n\r\n"):
                    echoed += await asyncio.wait_for(reader.read(100), 5)
            finally:
                writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert dechunk(echoed) == b"0123456789"


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (``data`` ends with its last chunk)."""
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]
