"""Connection-pool limits towards one destination: Envoy's circuit-breaker thresholds.

With HTTP/1.1 every request in flight holds a connection, so: a request gets a
connection while fewer than ``max_connections`` (and ``max_requests``) are in
use; otherwise it waits, if fewer than ``max_pending`` already wait; otherwise
it overflows at once (the caller answers 503, which the outlier detection does
not count: the destination did nothing wrong).
"""

from __future__ import annotations

import asyncio
from collections import deque

from proxy.policy import Pool


class Overflow(Exception):
    """The destination's pool is full: the request is refused, not queued."""


class PoolGate:
    def __init__(self, limits: Pool) -> None:
        self.limits = limits
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def _capacity(self) -> int:
        return min(self.limits.max_connections, self.limits.max_requests)

    async def acquire(self) -> None:
        """Take a slot, waiting for one if allowed; raises ``Overflow`` if not."""
        if self.active < self._capacity() and not self._waiting:
            self.active += 1
            return
        if len(self._waiting) >= self.limits.max_pending:
            raise Overflow
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # release() hands its slot over: active is already counted
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up
            else:
                self._waiting.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; active stays the same
                return
        self.active -= 1

    def set_limits(self, limits: Pool) -> None:
        """New limits apply to new requests; those in flight finish as they are."""
        self.limits = limits
        while self._waiting and self.active < self._capacity():
            waiter = self._waiting.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)
