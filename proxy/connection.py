"""What the sidecar's HTTP connections share, server side and client side: reading every
socket into one buffer, and waiting for a socket's send buffer to drain."""

from __future__ import annotations

import asyncio
from typing import cast

READ_SIZE = 256 * 1024
_READ_BUFFER = memoryview(bytearray(READ_SIZE))


class Connection(asyncio.BufferedProtocol):
    """A connection's socket side; a subclass parses in ``data_received`` and says what
    a write to it raises once the peer has gone (``gone``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # once: each look-up is a system call on 3.11
        self.transport: asyncio.Transport | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None

    def gone(self) -> ConnectionError:
        raise NotImplementedError

    def data_received(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    # -- reading ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """The one buffer every connection reads its socket into.

        Sharing it is safe: the event loop reads into it and hands the bytes to
        ``buffer_updated`` in one go, and the parser copies out what it keeps before
        returning. It spares each read a fresh 256 KiB allocation (with asyncio's
        default ``data_received`` path, three memory-mapping system calls per read,
        which cost more than the read itself in a VM).
        """
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ_BUFFER[:nbytes])

    def pause_reading(self) -> None:
        """Stop reading from the socket (a body waits unread, or a request in line)."""
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- writing ---------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        """Wait until the socket takes more; raises ``gone()`` if the peer has gone."""
        if self.transport is None:
            raise self.gone()
        if not self._paused_writing:
            return
        self._drain = self.loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def writer_lost(self) -> None:
        """For ``connection_lost``: a write waiting to drain learns the peer has gone."""
        self.transport = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(self.gone())
            self._drain.exception()  # retrieved here: nobody else may be waiting
