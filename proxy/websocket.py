"""A WebSocket client (RFC 6455), only what the control link needs: text messages both ways,
pings answered, close. No extensions (no compression), no TLS: the control plane is on this
machine or the project's own network.

The sidecar does not load aiohttp (its import alone is most of a sidecar's memory
budget); the control plane's side is aiohttp's server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
import time
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 64 * 1024 * 1024
"""The largest message accepted from the server (a snapshot of a very large mesh fits)."""

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class WebSocketError(Exception):
    """The handshake was refused or the server broke the protocol."""


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_received = time.monotonic()
        """When the server last sent anything (its heartbeat pings included)."""

    @property
    def closed(self) -> bool:
        return self.close_code is not None or self._writer.is_closing()

    async def send_text(self, text: str) -> None:
        await self._send(TEXT, text.encode())

    async def ping(self) -> None:
        """A ping: the server answers it with a pong, which counts in ``last_received``."""
        await self._send(PING, b"")

    async def receive(self) -> str | None:
        """The next text message; ``None`` once the connection is closed (``close_code`` says
        how). Pings are answered on the way; binary messages are skipped."""
        parts: list[bytes] = []
        kind = None
        size = 0
        while True:
            try:
                fin, opcode, payload = await self._frame()
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close_code = self.close_code or 1006
                self._writer.close()
                return None
            self.last_received = time.monotonic()
            if opcode == PING:
                await self._send(PONG, payload)
            elif opcode == PONG:
                continue
            elif opcode == CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                await self._close_back()
                return None
            else:
                if opcode != CONTINUATION:
                    kind, parts, size = opcode, [], 0
                parts.append(payload)
                size += len(payload)
                if size > MAX_MESSAGE:
                    raise WebSocketError(f"a message over {MAX_MESSAGE} bytes")
                if fin:
                    if kind == TEXT:
                        return b"".join(parts).decode()
                    parts, kind = [], None

    async def close(self, code: int = 1000) -> None:
        if self.close_code is None:
            self.close_code = code
            with contextlib.suppress(ConnectionError):
                await self._send(CLOSE, struct.pack("!H", code))
        self._writer.close()

    async def _close_back(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(CLOSE, struct.pack("!H", 1000))
        self._writer.close()

    async def _frame(self) -> tuple[bool, int, bytes]:
        head = await self._reader.readexactly(2)
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        masked, length = bool(head[1] & 0x80), head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
        if length > MAX_MESSAGE:
            raise WebSocketError(f"a frame of {length} bytes, over {MAX_MESSAGE}")
        mask = await self._reader.readexactly(4) if masked else b""
        payload = await self._reader.readexactly(length)
        if masked:
            payload = _mask(payload, mask)
        return fin, opcode, payload

    async def _send(self, opcode: int, payload: bytes) -> None:
        """One frame; a client's frames are masked (RFC 6455 5.3)."""
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        self._writer.write(head + mask + _mask(payload, mask))
        await self._writer.drain()


def _mask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


HANDSHAKE_TIMEOUT = 10.0


async def connect(url: str, headers: dict[str, str]) -> WebSocket:
    """Open a WebSocket to ``url`` (``http://`` or ``ws://``). Raises ``OSError``,
    ``TimeoutError`` or ``WebSocketError`` (the server answered other than 101)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {parts.netloc}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            try:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise WebSocketError("the server closed the connection in the handshake") from exc
            status_line, *fields = head.split("\r\n")
            status = status_line.split(" ", 2)
            if len(status) < 2 or status[1] != "101":
                raise WebSocketError(f"the server answered {' '.join(status[1:]) or head!r}")
            answer = {}
            for field in fields:
                name, _, value = field.partition(":")
                answer[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            if answer.get("sec-websocket-accept") != expected:
                raise WebSocketError("the server's Sec-WebSocket-Accept does not match")
        except BaseException:
            writer.close()
            raise
    return WebSocket(reader, writer)
