"""The sidecar's HTTP/1.1 client: pooled keep-alive connections to upstreams, parsed by httptools.

``Pool.request`` sends one request and returns the response's head as soon as
it has arrived, its body still streaming in (``Response.body``); ``release``
gives the connection back to the pool once the body is read whole, or closes
it. Errors are three: ``ConnectFailed`` (nothing was sent), ``UpstreamReset``
(the connection broke before the head of an answer came) and ``BodyBrokeOff``
(the request's own body broke off on its way in: the caller's doing, so the
request is cut off before the upstream can take it for whole).

A call to another sidecar may go over mTLS (``Tls``): the connection presents
this sidecar's certificate, checks the other's against the mesh's CA, and is
used only if that certificate names the SPIFFE ID expected of it (Istio's
secure naming); otherwise it fails as ``ConnectFailed``. Pooled connections
are kept apart by that ID, plaintext ones by none.

A request sent on a reused keep-alive connection that the upstream had just
closed (the race every HTTP client has) is sent again once on a new connection,
if nothing of an answer came and its body can be sent again.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httptools
from multidict import CIMultiDict

from proxy.body import Body, BodyError
from proxy.connection import Connection
from proxy.mtls import peer_spiffe_ids
from proxy.toxics import reset_connection

IDLE_TIMEOUT = 30.0
"""A pooled connection unused for this long is closed rather than reused."""
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ConnectFailed(OSError):
    """The connection could not be made: nothing was sent."""


class UpstreamReset(ConnectionError):
    """The connection broke before the head of an answer came."""


class BodyBrokeOff(ConnectionError):
    """The request body being streamed broke off before its end (its caller went away or
    sent a bad chunk): the upstream did nothing wrong, and was cut off."""


@dataclass(frozen=True)
class Tls:
    """Call over mTLS: present ``context``'s identity, expect the peer to be ``peer_id``."""

    context: ssl.SSLContext
    peer_id: str


Key = tuple[str, int, str]
"""A pooled connection's upstream: host, port, and the SPIFFE ID it proved ("": plaintext)."""

RequestBody = bytes | Body | None
"""None (no body), bytes (sent with a ``Content-Length``, can be sent again) or a stream."""


class Response:
    __slots__ = ("_conn", "body", "headers", "reason", "status")

    def __init__(
        self,
        conn: ClientConnection,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        body: Body,
    ) -> None:
        self._conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def release(self) -> None:
        """Give the connection back (if the body was read whole and it can be reused)."""
        self._conn.release(self.body.at_eof and self.body.complete)


class ClientConnection(Connection):
    def __init__(self, pool: Pool, key: Key) -> None:
        super().__init__()
        self.pool = pool
        self.key = key
        self.closed = False
        self.used_at = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_only = False
        self._close_delimited = False
        self._reusable = True
        self._got_bytes = False
        self._pump: asyncio.Task[None] | None = None
        """The request body still being sent (the answer may begin before it ends)."""

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writer_lost()
        self._fail("the upstream closed the connection")

    def gone(self) -> UpstreamReset:
        return UpstreamReset("the upstream closed the connection")

    def eof_received(self) -> bool | None:
        self._fail("the upstream closed the connection")
        return False

    def data_received(self, data: bytes | memoryview) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"malformed HTTP response: {exc or type(exc).__name__}")
            if self.transport is not None:
                self.transport.abort()

    # -- httptools callbacks -----------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers: CIMultiDict[str] = CIMultiDict(
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers]
        )
        reason = self._reason.decode("latin-1")
        self._headers, self._reason = [], b""
        if status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if not self._parser.should_keep_alive():
            self._reusable = False
        if self._head_only or status in _NO_BODY_STATUS:
            if self._head_only:
                self._reusable = False  # llhttp would wait for the body a HEAD answer lacks
            body = Body.empty()
        else:
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            length = headers.get("content-length")
            body = Body(
                None if chunked or length is None else int(length),
                self.pause_reading,
                self.resume_reading,
            )
            self._close_delimited = not chunked and length is None
            if self._close_delimited:
                self._reusable = False
        response = Response(self, status, reason, headers, body)
        self._response = response
        if self._head is not None and not self._head.done():
            self._head.set_result(response)

    def on_body(self, data: bytes) -> None:
        if self._response is not None:
            self._response.body.feed(data)

    def on_message_complete(self) -> None:
        if self._response is not None and self._parser.get_status_code() >= 200:
            self._response.body.finish()

    # -- the request ---------------------------------------------------------------

    async def send(self, head: bytes, body: RequestBody, head_only: bool) -> Response:
        assert self.transport is not None
        loop = self.loop
        self._head = loop.create_future()
        self._head_only = head_only
        self._got_bytes = False
        self._close_delimited = False
        self._response = None
        self._pump = None
        if isinstance(body, Body) and body.complete:
            # All of it is here already (most bodies): one write, as for bytes.
            rest = body.take()
            if body.length is None:
                rest = (b"%x\r\n%b\r\n" % (len(rest), rest) if rest else b"") + b"0\r\n\r\n"
            self.transport.write(head + rest)
        elif isinstance(body, Body):
            self.transport.write(head)
            self._pump = loop.create_task(self._send_body(body))
        else:
            self.transport.write(head + body if body else head)
        try:
            return await self._head
        except asyncio.CancelledError:
            # Given up on (a timeout, or the caller left): reset, so that the upstream learns
            # nobody waits for the answer (a close alone would read as a half-close).
            self.abort()
            raise
        except BaseException:
            self.close()  # broken: never reused
            raise
        finally:
            self._head = None

    async def _send_body(self, body: Body) -> None:
        """Stream a request body to the upstream (chunked if its length is not known)."""
        chunked = body.length is None
        try:
            while chunk := await body.read():
                if self.transport is None:
                    return
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self.drain()
            if chunked and self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except BodyError as exc:
            # The caller broke off mid-body: the upstream must not take it as whole.
            self._fail(f"the caller broke off the request body: {exc}", BodyBrokeOff)
            if self.transport is not None:
                self.transport.abort()
        except UpstreamReset:
            self._fail("the upstream closed the connection")  # as connection_lost said

    def _fail(self, message: str, error: type[ConnectionError] = UpstreamReset) -> None:
        self._reusable = False
        if self._head is not None and not self._head.done():
            self._head.set_exception(error(message))
        response = self._response
        if response is not None:
            if self._close_delimited:
                response.body.finish()  # its end is the connection's
            else:
                response.body.fail(BodyError(message))

    def release(self, whole: bool) -> None:
        self._response = None
        if self._pump is not None and not self._pump.done():
            # Answered whole before the request's body was sent whole (an early 413, say):
            # the rest is not sent, and the connection is not reused.
            self._pump.cancel()
            whole = False
        self._pump = None
        if whole and self._reusable and not self.closed and self.transport is not None:
            self.used_at = time.monotonic()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close with a TCP reset (an upstream takes a plain close for a half-close)."""
        self.closed = True
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        reset_connection(self.transport)

    @property
    def answered_nothing(self) -> bool:
        return not self._got_bytes


class Pool:
    """Keep-alive connections per upstream address."""

    def __init__(self, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[Key, list[ClientConnection]] = {}

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: RequestBody,
        tls: Tls | None = None,
    ) -> Response:
        """Send a request; its answer's head. Raises ``ConnectFailed``, ``UpstreamReset`` or
        ``BodyBrokeOff``."""
        key = (host, port, tls.peer_id if tls is not None else "")
        head = _request_head(method, target, headers, body)
        conn = self._reuse(key)
        if conn is not None:
            try:
                return await conn.send(head, body, method == "HEAD")
            except UpstreamReset:
                if not conn.answered_nothing or isinstance(body, Body):
                    raise
                # The upstream closed the idle connection as we sent: once more, on a new one.
        conn = await self._connect(key, tls)
        return await conn.send(head, body, method == "HEAD")

    def _reuse(self, key: Key) -> ClientConnection | None:
        idle = self._idle.get(key)
        deadline = time.monotonic() - IDLE_TIMEOUT
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.used_at > deadline:
                return conn
            conn.close()
        return None

    async def _connect(self, key: Key, tls: Tls | None) -> ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, protocol = await loop.create_connection(
                    lambda: ClientConnection(self, key),
                    key[0],
                    key[1],
                    ssl=tls.context if tls is not None else None,
                    # Peers are named by SPIFFE ID, checked below, not by host name.
                    server_hostname="" if tls is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectFailed(0, f"no connection within {self.connect_timeout:g}s") from exc
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc).lower().replace("_", " ")
            raise ConnectFailed(0, f"the mTLS handshake failed: {reason}") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConnectFailed(exc.errno, reason) from exc
        if tls is not None:
            ids = peer_spiffe_ids(transport)
            if ids != [tls.peer_id]:
                transport.abort()
                named = ", ".join(ids) or "no SPIFFE ID"
                raise ConnectFailed(0, f"its certificate names {named}, not {tls.peer_id}")
        return protocol

    def put(self, conn: ClientConnection) -> None:
        self._idle.setdefault(conn.key, []).append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _request_head(
    method: str, target: str, headers: Iterable[tuple[str, str]], body: RequestBody
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers:
        if name.lower() != "content-length":
            lines.append(f"{name}: {value}\r\n")
    if isinstance(body, Body):
        if body.length is None:
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            lines.append(f"Content-Length: {body.length}\r\n")
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
