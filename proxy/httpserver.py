"""The sidecar's HTTP/1.1 server: asyncio protocols parsed by httptools (llhttp, Node's parser).

One ``Request`` at a time per connection, in order (pipelined requests wait,
with the socket paused). Every malformed request is answered and the
connection closed, and nothing of it is forwarded: llhttp runs strict (no
leniency flags), so a ``Content-Length`` with ``Transfer-Encoding``, a bad
chunk size, obsolete line folding or a bare LF end the connection with 400.

Limits, as Envoy's defaults where it has one:

* the request head (line and headers) at most ``MAX_HEAD_BYTES`` (Envoy's
  ``max_request_headers_kb``: 60 KiB) and ``MAX_HEADERS`` fields (100) → 431;
* the head must arrive whole within ``HEAD_TIMEOUT`` seconds of its first
  byte → 408 (a slow-loris client cannot hold a connection open);
* a chunked body stops at ``MAX_BODY`` bytes (the connection is closed; a
  ``Content-Length`` over it is refused with 413 by the sidecar before any of
  it is read);
* a keep-alive connection idle for ``IDLE_TIMEOUT`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from urllib.parse import unquote

import httptools
from multidict import CIMultiDict

from proxy.body import Body, BodyError
from proxy.connection import Connection
from proxy.mtls import Gate, Refusals, accept, peer_identity

log = logging.getLogger("devmesh.proxy")

MAX_HEAD_BYTES = 60 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
MAX_BODY = 64 * 1024 * 1024
"""The largest request body a sidecar passes on."""
_SWEEP_INTERVAL = 0.5

Handler = Callable[["Request"], Awaitable[None]]
HeaderItems = Iterable[tuple[str, str]]

_NO_BODY_STATUS = frozenset({204, 304})
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_REASONS[413] = "Content Too Large"  # RFC 9110's name; Python 3.11 still has the older one


def reason_of(status: int) -> str:
    return _REASONS.get(status, "")


class ResponseError(ConnectionError):
    """The response could not be written: the caller went away."""


class Request:
    """One request as it arrived, and the one response that answers it."""

    __slots__ = (
        "_conn",
        "_framing",
        "body",
        "finished",
        "headers",
        "keep_alive",
        "loop",
        "lost",
        "method",
        "path",
        "path_qs",
        "started",
        "target",
        "task",
        "version",
    )

    def __init__(
        self,
        conn: ServerConnection,
        method: str,
        target: str,
        version: str,
        headers: CIMultiDict[str],
        body: Body,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        """The request-target as sent: origin-form (``/a?b``) or absolute-form (``http://h/a``)."""
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.path_qs = target
        if target[:1] != "/":
            parsed = _absolute_path_qs(target)
            if parsed is not None:
                self.path_qs = parsed
        path = self.path_qs.partition("?")[0]
        self.path = unquote(path) if "%" in path else path
        """The path, percent-decoded, without the query."""
        self.loop = conn.loop
        self.task: asyncio.Task[None] | None = None
        """The task handling it (set when its handling begins)."""
        self.started = False
        """The response's head is written: it can no longer be replaced."""
        self.finished = False
        self.lost = False
        """The caller's connection broke before the answer was done: its handling is
        cancelled (there is no one left to answer), as Envoy resets the upstream request."""
        self._framing = ""

    # -- about the connection --------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    @property
    def remote(self) -> str | None:
        """The peer's address."""
        return self._conn.peer

    @property
    def principal(self) -> str | None:
        """The caller's SPIFFE ID, proven by mTLS; ``None`` on a plaintext connection."""
        return self._conn.principal

    @property
    def gone(self) -> bool:
        """The caller went away: nothing more can be written."""
        transport = self._conn.transport
        return transport is None or transport.is_closing()

    @property
    def has_body(self) -> bool:
        return self.body.length != 0

    @property
    def expects_continue(self) -> bool:
        return (
            self.version == "1.1"
            and self.headers.get("expect", "").lower() == "100-continue"
            and not self.body.complete
        )

    # -- answering ---------------------------------------------------------------

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue`` (once; only while the body has not come)."""
        if self.expects_continue and not self.started and self._conn.transport is not None:
            self._conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def respond(self, status: int, reason: str, headers: HeaderItems, body: bytes = b"") -> None:
        """The whole response in one write."""
        head = self._head(status, reason, headers, len(body))
        self._write(head + body if self._framing != "none" else head)
        self._end()

    def start(self, status: int, reason: str, headers: HeaderItems, length: int | None) -> None:
        """Write the response's head; ``length`` ``None``: the body's size is not known."""
        self._write(self._head(status, reason, headers, length))

    async def write(self, data: bytes) -> None:
        if not data or self._framing == "none":
            return
        if self._framing == "chunked":
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._write(data)
        await self._conn.drain()

    def end(self, last: bytes = b"") -> None:
        """Finish the response (with ``last``, the body's last bytes, if any)."""
        if self._framing == "chunked":
            tail = b"%x\r\n%b\r\n0\r\n\r\n" % (len(last), last) if last else b"0\r\n\r\n"
            self._write(tail)
        elif last and self._framing != "none":
            self._write(last)
        self._end()

    def abort(self) -> None:
        """Break the connection: a response that cannot end normally must not look complete."""
        self.finished = True
        if self._conn.transport is not None:
            self._conn.transport.abort()

    def _head(self, status: int, reason: str, headers: HeaderItems, length: int | None) -> bytes:
        if self.started:
            raise RuntimeError("the response has already begun")
        self.started = True
        no_body = self.method == "HEAD" or status in _NO_BODY_STATUS or status < 200
        lines = [f"HTTP/1.1 {status} {reason or reason_of(status)}\r\n"]
        for name, value in headers:
            if not no_body and name.lower() == "content-length":
                continue
            lines.append(f"{name}: {value}\r\n")
        if no_body:
            self._framing = "none"
        elif length is not None:
            self._framing = "length"
            lines.append(f"Content-Length: {length}\r\n")
        elif self.version == "1.1":
            self._framing = "chunked"
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            self._framing = "close"
            self.keep_alive = False
        # A body still arriving when the answer is made is not read on: the connection ends.
        if not self.body.complete:
            self.keep_alive = False
        if not self.keep_alive:
            lines.append("Connection: close\r\n")
        elif self.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _write(self, data: bytes) -> None:
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            raise ResponseError("the caller closed the connection")
        transport.write(data)

    def _end(self) -> None:
        self.finished = True


def _absolute_path_qs(target: str) -> str | None:
    try:
        url = httptools.parse_url(target.encode("latin-1"))
    except httptools.HttpParserInvalidURLError:
        return None
    path = (url.path or b"/").decode("latin-1")
    return path + ("?" + url.query.decode("latin-1") if url.query else "")


class _Refuse(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ServerConnection(Connection):
    """One downstream connection."""

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self.listener = listener
        self.peer: str | None = None
        self.principal: str | None = None
        """The caller's SPIFFE ID, on a connection that came over mTLS."""
        self._parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._fed_in_head = 0
        self.head_since: float | None = None
        """When the head being read began to arrive (None between requests)."""
        self.idle_since: float | None = time.monotonic()
        self._parsing: Request | None = None
        self._current: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[Request] = deque()
        self._upgraded = False
        self._eof = False
        self._close_after = False

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        if transport.get_extra_info("ssl_object") is not None:
            # The handshake has ended and nothing has been read: a certificate of the
            # mesh's CA that names no identity of this project ends the connection here.
            gate = self.listener.gate() if self.listener.gate is not None else None
            self.principal = peer_identity(transport, gate.trust_prefix if gate else None)
            if self.principal is None:
                self._upgraded = True  # read nothing
                self.listener.refusals.add(
                    "identity", peer, "its certificate names no identity of this mesh"
                )
                if self.transport is not None:
                    self.transport.abort()
                return
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.writer_lost()
        if self._parsing is not None:
            self._parsing.body.fail(BodyError("the caller closed the connection mid-body"))
        current, task = self._current, self._task
        if current is not None and not current.finished and task is not None:
            # The caller is gone (it reset the connection, or it was cut off): what its
            # request still waits for is given up. (A half-close is not this: eof_received.)
            current.lost = True
            task.cancel()

    def gone(self) -> ResponseError:
        return ResponseError("the caller closed the connection")

    def data_received(self, data: bytes | memoryview) -> None:
        if self._upgraded:
            return  # after an upgrade request: its answer closes the connection
        in_head = self.head_since is not None or self._parsing is None
        if in_head:
            self._fed_in_head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or Upgrade: answered as a plain request (on_headers_complete made it
            # the connection's last), and what follows its head is not HTTP: not read.
            self._upgraded = True
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refuse):
                self._refuse(refusal.status, refusal.code, refusal.message)
            else:
                log.error("HTTP server callback failed", exc_info=exc)
                self._refuse(500, "internal", "the sidecar failed reading the request")
        except httptools.HttpParserError as exc:
            self._refuse(400, "bad-request", f"malformed HTTP request: {_describe(exc)}")
        else:
            if self.head_since is not None and self._fed_in_head > MAX_HEAD_BYTES:
                self._refuse(
                    431,
                    "header-too-large",
                    f"request headers over the mesh's limit of {MAX_HEAD_BYTES} bytes",
                )

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._parsing is not None:
            self._parsing.body.fail(BodyError("the caller closed the connection mid-body"))
        # Keep the transport open for the answer to what is in flight (a half-close).
        return self._current is not None

    # -- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_since = time.monotonic()
        self.idle_since = None
        self._url = []
        self._headers = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._count(len(name) + len(value) + 4)
        if len(self._headers) > MAX_HEADERS:
            raise _Refuse(
                431, "too-many-headers", f"more than the mesh's limit of {MAX_HEADERS} headers"
            )

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers: CIMultiDict[str] = CIMultiDict(
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers]
        )
        length_header = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if chunked:
            body = Body(None, self.pause_reading, self.resume_reading)
        elif length_header:
            length = int(length_header)  # llhttp has checked it is one number
            body = Body(length, self.pause_reading, self.resume_reading)
            if not length:
                body = Body.empty()
        else:
            body = Body.empty()
        request = Request(
            self,
            parser.get_method().decode("latin-1"),
            b"".join(self._url).decode("latin-1"),
            parser.get_http_version(),
            headers,
            body,
            parser.should_keep_alive() and not parser.should_upgrade(),
        )
        self.head_since = None
        self._fed_in_head = 0
        self._parsing = request if not body.complete else None
        if self._current is None:
            self._begin(request)
        else:
            self._pending.append(request)
            self.pause_reading()

    def on_body(self, data: bytes) -> None:
        request = self._parsing
        if request is None:
            return
        if request.body.received + len(data) > MAX_BODY:
            request.body.fail(BodyError(f"the request body is over {MAX_BODY} bytes"))
            self._parsing = None
            if self.transport is not None:
                self.transport.abort()
            return
        request.body.feed(data)

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing.body.finish()
            self._parsing = None

    # -- requests ------------------------------------------------------------------

    def _begin(self, request: Request) -> None:
        self._current = request
        task = self._task = request.task = self.loop.create_task(self._run(request))
        self.listener.tasks.add(task)
        task.add_done_callback(self.listener.tasks.discard)

    async def _run(self, request: Request) -> None:
        try:
            await self.listener.handler(request)
            if not request.finished and not request.gone:
                if request.started:
                    request.abort()
                else:
                    request.respond(500, "", [("Content-Type", "text/plain")], b"no answer\n")
        except ResponseError:
            request.abort()
        except Exception:
            log.exception("the sidecar failed handling %s %s", request.method, request.target)
            if not request.started and not request.gone:
                request.respond(500, "", [("x-devmesh-error", "internal")], b"the sidecar failed\n")
            else:
                request.abort()
        self._done(request)

    def _done(self, request: Request) -> None:
        self._current = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not request.keep_alive or self._close_after or (self._eof and not self._pending):
            transport.close()
            return
        if self._pending:
            self._begin(self._pending.popleft())
            if not self._pending:
                self.resume_reading()
        else:
            self.idle_since = time.monotonic()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Refuse(
                431,
                "header-too-large",
                f"request headers over the mesh's limit of {MAX_HEAD_BYTES} bytes",
            )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be read, and close: nothing of it goes on."""
        transport = self.transport
        if self._parsing is not None:
            self._parsing.body.fail(BodyError(message))
            self._parsing = None
        self.head_since = None
        self._upgraded = True  # read nothing more
        if transport is None or transport.is_closing():
            return
        current = self._current
        if current is not None and not current.started and self._task is not None:
            # Its body broke (a bad chunk): whatever of it went on is cut off by cancelling
            # its handling (an upstream sees a request break off, never a whole one).
            current.started = current.finished = True
            self._task.cancel()
            current = None
        if current is None:
            body = (message + "\n").encode()
            transport.write(
                (
                    f"HTTP/1.1 {status} {reason_of(status)}\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"x-devmesh-error: {code}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
                + body
            )
        log.info("refused a request from %s: %s", self.peer, message)
        transport.close()

    def sweep(self, now: float) -> None:
        """Time limits: the head's (408) and a keep-alive connection's idleness."""
        if self.head_since is not None and now - self.head_since > HEAD_TIMEOUT:
            self._refuse(
                408,
                "header-timeout",
                f"the request's headers did not arrive within {HEAD_TIMEOUT:g}s",
            )
        elif self.idle_since is not None and now - self.idle_since > IDLE_TIMEOUT:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close_when_done(self) -> None:
        """Close now if idle, else once the request in hand is answered."""
        if self._current is None:
            self.close()
        else:
            self._close_after = True

    @property
    def busy(self) -> bool:
        return self._current is not None


def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(exc: Exception) -> str:
    text = str(exc)
    return text or type(exc).__name__


class Listener:
    """A listening socket, its connections and their handler tasks.

    With a ``gate``, each new connection is let in as plaintext or mTLS, or
    closed, by the gate in force when it arrives (``proxy.mtls``).
    """

    def __init__(self, handler: Handler, gate: Callable[[], Gate] | None = None) -> None:
        self.handler = handler
        self.gate = gate
        self.refusals = Refusals()
        self.connections: set[ServerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._socket: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._admitting: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the bound port. Raises ``OSError`` (port taken) with nothing left bound."""
        loop = asyncio.get_running_loop()
        bound: int
        if self.gate is None:
            self._server = await loop.create_server(
                lambda: ServerConnection(self), host, port, reuse_address=True, backlog=1024
            )
            bound = self._server.sockets[0].getsockname()[1]
        else:
            self._socket = _listening_socket(host, port)
            bound = self._socket.getsockname()[1]
            self._acceptor = loop.create_task(
                accept(
                    self._socket,
                    self.gate,
                    lambda: ServerConnection(self),
                    self.refusals,
                    self._admitting,
                )
            )
        self._sweeper = loop.create_task(self._sweep())
        return bound

    def enforce(self, gate: Gate) -> None:
        """Close the connections ``gate`` would not let in now (plaintext ones under
        ``strict``, mTLS ones under ``off``), each once its request in hand is answered,
        as Envoy drains connections when a change of mode changes its filter chain."""
        for conn in list(self.connections):
            secure = conn.principal is not None
            if (gate.mode == "strict" and not secure) or (gate.mode == "off" and secure):
                conn.close_when_done()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.sweep(now)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, close idle connections, let requests in flight finish for up to
        ``grace`` seconds, then break what is left."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None:
            self._acceptor.cancel()
            for task in list(self._admitting):
                task.cancel()
            await asyncio.gather(self._acceptor, *self._admitting, return_exceptions=True)
            self._acceptor = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
