"""The inbound sidecar's gate in front of its app: held while the app restarts.

A restart (``devmesh restart``) asks the instance's sidecar, through the
control plane, to *hold*: calls already with the app finish, new ones wait
here instead of finding the app gone, and the sidecar says when none is in
flight (``hold`` returns). The runtime then stops the app, starts the new one,
waits for its health check and asks for a *release*: the waiting calls go on
to the new app. Callers see a slower answer, never an error.

A hold ends by itself after ``HOLD_LIMIT`` seconds (a restart that never
finished must not keep an instance's calls waiting for good); a call that
waited that long is answered ``503`` by the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

HOLD_LIMIT = 60.0
"""At most this long a hold lasts, and a call waits at the gate."""
DRAIN_LIMIT = 10.0
"""At most this long ``hold`` waits for the calls in flight to end."""


class AppGate:
    def __init__(self, on_release: Callable[[], None] = lambda: None) -> None:
        """``on_release`` is called each time a hold ends (by a release, or by itself)."""
        self.on_release = on_release
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    async def enter(self) -> bool:
        """Wait until the gate is open (at most ``HOLD_LIMIT``), then count a call in flight;
        False if it stayed closed that long (answer the caller 503). Pair with ``leave``."""
        if not self._open.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), HOLD_LIMIT)
            if not self._open.is_set():
                return False
        self.in_flight += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def hold(self) -> int:
        """Close the gate and wait (at most ``DRAIN_LIMIT``) until no call is with the app;
        how many still are."""
        if self._open.is_set():
            self._open.clear()
            self._expiry = asyncio.get_running_loop().call_later(HOLD_LIMIT, self.release)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), DRAIN_LIMIT)
        return self.in_flight

    def release(self) -> None:
        """Open the gate: the calls that wait go on."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self._open.is_set():
            self._open.set()
            self.on_release()
