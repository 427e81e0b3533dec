"""Carrying out a fault's decision on a live connection: delay, pace, hang, reset.

Toxiproxy-like effects, kept apart from ``proxy.faults`` (which only decides).
Each takes an injectable ``sleep``/``clock`` so it is tested without waiting.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

from proxy.faults import check_bandwidth

Sleep = Callable[[float], Awaitable[object]]
Send = Callable[[bytes], Awaitable[object]]


async def delay(seconds: float, *, sleep: Sleep = asyncio.sleep) -> None:
    if seconds > 0:
        await sleep(seconds)


async def hang(
    seconds: float, reset: Callable[[], object], *, sleep: Sleep = asyncio.sleep
) -> None:
    """Hold the request unanswered for ``seconds``, then call ``reset`` (e.g.
    ``lambda: reset_connection(request.transport)``). Cancelled if the peer goes first."""
    await sleep(seconds)
    reset()


def reset_connection(transport: asyncio.WriteTransport | None) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashed server would."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Throttle:
    """Paces writes to ``rate`` bytes per second, in pieces of 1/50 s of data (at least 1 byte).

    A piece goes out when the schedule (the bytes already sent over ``rate``) says so,
    so a late event loop does not slow the average down: a wake-up late by less than
    a piece's time costs nothing, and the schedule keeps one piece of credit for a
    later one (a GC pause), no more, so an idle sender cannot burst later. Tolerance: over
    any interval of Δt seconds at most ``rate·Δt + 2`` pieces go out, and N bytes
    written at once take (N - piece)/rate from their first to their last byte,
    within 1/50 s of N/rate.
    """

    PIECES_PER_SECOND = 50

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        piece: int | None = None,
    ) -> None:
        self.rate = check_bandwidth(rate, "bandwidth")
        self.piece = piece if piece is not None else max(1, rate // self.PIECES_PER_SECOND)
        if self.piece <= 0:
            raise ValueError(f"piece must be at least 1 byte, got {piece!r}")
        self._clock = clock
        self._sleep = sleep
        self._credit = self.piece / rate
        self._due: float | None = None

    async def write(self, chunk: bytes, send: Send) -> None:
        for start in range(0, len(chunk), self.piece):
            piece = chunk[start : start + self.piece]
            now = self._clock()
            due = now if self._due is None else max(self._due, now - self._credit)
            if due > now:
                await self._sleep(due - now)
            await send(piece)
            self._due = due + len(piece) / self.rate
