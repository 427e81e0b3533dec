"""A message body arriving on a connection, read in chunks with flow control.

The connection's protocol ``feed``s what its parser hands it and ``finish``es
(or ``fail``s) the body; a reader takes chunks with ``read``. When more than
``HIGH_WATER`` bytes wait unread, the connection stops reading from its socket
until the reader has caught up, so a fast sender cannot fill the sidecar's
memory (the same back-pressure TCP gives end to end).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

HIGH_WATER = 256 * 1024
"""Unread bytes above which the connection stops reading from its socket."""


class BodyError(Exception):
    """The body could not be read to its end: the connection broke, or its framing was bad."""


class Body:
    def __init__(
        self,
        length: int | None,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
    ) -> None:
        self.length = length
        """The ``Content-Length`` it was announced with; ``None`` when chunked or unknown."""
        self.received = 0
        """Bytes received so far (read or not)."""
        self._chunks: deque[bytes] = deque()
        self._waiting = 0
        self._done = False
        self._error: BodyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause, self._resume = pause, resume
        self._paused = False

    @classmethod
    def empty(cls) -> Body:
        body = cls(0)
        body._done = True
        return body

    # -- the connection's side ---------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._waiting += len(data)
        self.received += len(data)
        if self._waiting > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        if not self._done:
            self._error = error
            self._done = True
            self._wake()

    # -- the reader's side ---------------------------------------------------

    @property
    def complete(self) -> bool:
        """Everything arrived (nothing more to wait for), whether read yet or not."""
        return self._done and self._error is None

    @property
    def waiting_on_sender(self) -> bool:
        """Not whole yet, and nothing of it waits unread: its sender is the one to send more
        (not the reader, which may have stopped reading, so that the sender was paused)."""
        return not self._done and not self._chunks

    @property
    def at_eof(self) -> bool:
        """Read to its end: nothing waits and nothing more will come."""
        return self._done and not self._chunks

    def take(self) -> bytes:
        """What waits unread, without waiting (``b""`` if nothing does)."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._consumed()
        return data

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at the end. Raises ``BodyError`` if the body broke off."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def _consumed(self) -> None:
        self._waiting = 0
        if self._paused:
            self._paused = False
            self._resume()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
