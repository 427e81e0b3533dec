"""One whole sidecar (or gateway): listeners, health probe and control-plane link, started
and stopped together. ``python -m proxy`` runs one until SIGTERM; tests run several in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from proxy.bootstrap import Bootstrap
from proxy.control import ControlLink
from proxy.destinations import Destinations
from proxy.health import HealthProbe
from proxy.identity import IdentityStore
from proxy.outlier import BreakerSummary
from proxy.router import Router
from proxy.server import BoundPorts, Sidecar
from proxy.snapshot import EMPTY, load_snapshot
from proxy.telemetry import TelemetryBuffer

log = logging.getLogger("devmesh.proxy")


class SidecarRunner:
    def __init__(self, boot: Bootstrap) -> None:
        self.boot = boot
        snapshot = load_snapshot(boot.snapshot_file)
        if snapshot is not None:
            log.info("starting from last good snapshot %d kept on disk", snapshot.version)
        self.router = Router(snapshot or EMPTY)
        self.telemetry = TelemetryBuffer()
        self.health = HealthProbe(boot.app_port, boot.health_path)
        self.destinations = Destinations(on_breaker_change=self._breaker_changed)
        self.destinations.sync(self.router.snapshot)
        self.router.subscribe(self.destinations.sync)
        self.identity = IdentityStore(boot.state_dir / "identity")
        if self.identity.load_kept() is not None:
            log.info("starting with the identity kept on disk")
        # A request the app refused is reported at once, not after three failed probes.
        self.sidecar = Sidecar(
            boot,
            self.router,
            self.telemetry,
            on_app_refused=self.health.observed_failure,
            destinations=self.destinations,
            identity=self.identity,
        )
        self.link: ControlLink | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> BoundPorts:
        """Bind every listener, then start probing and dialling the control plane.

        Raises ``OSError`` if a listener cannot bind; nothing is left running then.
        """
        ports = await self.sidecar.start()
        self.link = ControlLink(
            self.boot,
            ports,
            self.router,
            self.telemetry,
            self.health,
            self.destinations,
            self.identity,
            self.sidecar.app_gate,
        )
        self.health.on_change = self.link.health_changed
        self._tasks = [
            asyncio.create_task(self.link.run()),
            asyncio.create_task(self.health.run()),
        ]
        return ports

    def _breaker_changed(self, service: str, summary: BreakerSummary) -> None:
        panic = " · panic: routing to all" if summary.panic else ""
        log.info("breaker to %s: %s%s (%s)", service, summary.state, panic, summary.reason or "")
        if self.link is not None:
            self.link.breakers_changed()

    async def stop(self) -> None:
        """Leave routing, stop listening, hand the control plane what is buffered, then
        disconnect."""
        if self.link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.link.leave(), timeout=1.0)
        await self.sidecar.stop()
        if self.link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.link.flush(), timeout=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
