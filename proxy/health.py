"""Whether the instance behind this sidecar is ready to take traffic.

The sidecar probes its own instance on localhost (like a kubelet readiness
probe) and reports the state to the control plane, which only routes to ready
instances. The runtime's ``up`` waits on the same state.

Traffic is a probe too (passive health checking, as Envoy's outlier
detection): when the inbound listener finds the app refusing connections, the
sidecar says so with ``observed_failure`` and the instance turns unhealthy at
once instead of after ``FAILURES_BEFORE_UNHEALTHY`` probes; probing goes on and
turns it ready again once the app answers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Literal

from proxy.body import BodyError
from proxy.httpclient import Pool, UpstreamReset

State = Literal["starting", "ready", "unhealthy"]

FAILURES_BEFORE_UNHEALTHY = 3
"""A ready instance turns unhealthy after this many failed probes in a row."""
_PROBE_TIMEOUT = 2.0


class HealthProbe:
    def __init__(
        self,
        app_port: int | None,
        path: str | None,
        on_change: Callable[[], None] = lambda: None,
        interval_starting: float = 0.1,
        interval_ready: float = 1.0,
    ) -> None:
        self.app_port = app_port
        self.path = path
        self.state: State = "ready" if app_port is None else "starting"
        self.detail = "no port to probe" if app_port is None else "not probed yet"
        self.on_change = on_change
        self._failures = 0
        self._intervals = (interval_starting, interval_ready)
        self._observed = 0
        """How many failures traffic reported (a probe that ran across one is out of date)."""

    def describe(self) -> str:
        if self.app_port is None:
            return "none"
        if self.path:
            return f"GET http://127.0.0.1:{self.app_port}{self.path}"
        return f"TCP connect to 127.0.0.1:{self.app_port}"

    async def check(self) -> tuple[bool, str]:
        """One probe: ``(passed, what was seen)``."""
        assert self.app_port is not None
        try:
            if self.path:
                return await self._get(self.app_port, self.path)
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.app_port), _PROBE_TIMEOUT
            )
            writer.close()
            return True, f"{self.describe()} succeeded"
        except (OSError, BodyError, TimeoutError) as exc:
            return False, f"{self.describe()} failed: {_reason(exc)}"

    async def _get(self, port: int, path: str) -> tuple[bool, str]:
        pool = Pool(connect_timeout=_PROBE_TIMEOUT)
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                headers = [("Host", f"127.0.0.1:{port}"), ("Connection", "close")]
                response = await pool.request("127.0.0.1", port, "GET", path, headers, None)
                try:
                    await response.body.read_all()
                finally:
                    response.release()
        finally:
            pool.close()
        return response.status < 500, f"{self.describe()} answered {response.status}"

    async def run(self) -> None:
        """Probe forever (cancel to stop), reporting each change of state."""
        if self.app_port is None:
            return
        while True:
            observed = self._observed
            passed, detail = await self.check()
            if observed == self._observed:
                self._observe(passed, detail)
            await asyncio.sleep(self._intervals[self.state == "ready"])

    async def probe_now(self) -> None:
        """One probe at once, taken as any probe is (when a hold of the app ends)."""
        if self.app_port is None:
            return
        observed = self._observed
        passed, detail = await self.check()
        if observed == self._observed:
            self._observe(passed, detail)

    def observed_failure(self, detail: str) -> None:
        """Traffic found the app not answering (a request's connection was refused).

        A ready instance turns unhealthy now, with ``detail``, and ``on_change``
        reports it; a starting or unhealthy one is left to the probes. A probe
        that was under way when this happened has its result ignored: it may have
        passed just before the app went away.
        """
        if self.app_port is None or self.state != "ready":
            return
        self._observed += 1
        self._failures = FAILURES_BEFORE_UNHEALTHY
        self.state, self.detail = "unhealthy", detail
        self.on_change()

    def _observe(self, passed: bool, detail: str) -> None:
        before = (self.state, self.detail if self.state != "ready" else "")
        self.detail = detail
        if passed:
            self._failures = 0
            self.state = "ready"
        else:
            self._failures += 1
            if self.state == "ready" and self._failures >= FAILURES_BEFORE_UNHEALTHY:
                self.state = "unhealthy"
        if (self.state, self.detail if self.state != "ready" else "") != before:
            self.on_change()


def _reason(exc: BaseException) -> str:
    """``Connection refused``, not asyncio's strerror ``Connect call failed ('127.0.0.1', 80)``."""
    if isinstance(exc, UpstreamReset):
        return str(exc)
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno:
        return os.strerror(errno)
    return str(exc) or type(exc).__name__
