"""proxy.health: what traffic reports (``observed_failure``) and how the probe loop takes it.

The probe's check is scripted here (no sockets); ``tests/integration/test_health_probe.py``
probes real servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from proxy.health import HealthProbe
from tests.helpers import wait_for

REFUSED = "connection refused on 127.0.0.1:8000 by a request"


class ScriptedProbe(HealthProbe):
    """A probe whose checks wait for the test to hand each one its result."""

    def __init__(self, app_port: int | None = 8000) -> None:
        super().__init__(app_port, None, interval_starting=0, interval_ready=0)
        self.changes: list[tuple[str, str]] = []
        self.on_change = lambda: self.changes.append((self.state, self.detail))
        self.started = 0
        self.results: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    async def check(self) -> tuple[bool, str]:
        self.started += 1
        return await self.results.get()

    async def in_flight(self, n: int) -> None:
        """Wait until the ``n``-th check is waiting for its result."""
        await wait_for(lambda: self.started >= n, what=f"check {n} to start")


@asynccontextmanager
async def running(probe: HealthProbe) -> AsyncIterator[None]:
    task = asyncio.create_task(probe.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def ready(probe: ScriptedProbe) -> None:
    await probe.in_flight(1)
    probe.results.put_nowait((True, "ok"))
    await wait_for(lambda: probe.state == "ready", what="ready")


async def test_a_failure_seen_by_traffic_makes_a_ready_instance_unhealthy_at_once() -> None:
    probe = ScriptedProbe()
    async with running(probe):
        await ready(probe)
        probe.observed_failure(REFUSED)
        assert (probe.state, probe.detail) == ("unhealthy", REFUSED)
    assert probe.changes == [("ready", "ok"), ("unhealthy", REFUSED)], "reported once, at once"


async def test_probing_goes_on_and_turns_it_ready_again_when_the_app_answers() -> None:
    probe = ScriptedProbe()
    async with running(probe):
        await ready(probe)
        probe.observed_failure(REFUSED)
        probe.results.put_nowait((True, "the check that was under way"))  # out of date
        await probe.in_flight(3)
        assert probe.state == "unhealthy", "a probe that passed before the failure undid it"
        probe.results.put_nowait((False, "refused"))
        await probe.in_flight(4)
        probe.results.put_nowait((True, "answered"))
        await wait_for(lambda: probe.state == "ready", what="ready again")
    assert probe.changes == [
        ("ready", "ok"),
        ("unhealthy", REFUSED),
        ("unhealthy", "refused"),
        ("ready", "answered"),
    ]


async def test_more_failures_seen_by_traffic_report_nothing_new() -> None:
    probe = ScriptedProbe()
    async with running(probe):
        await ready(probe)
        for _ in range(5):
            probe.observed_failure(REFUSED)
    assert probe.changes == [("ready", "ok"), ("unhealthy", REFUSED)]


async def test_a_starting_instance_is_left_to_its_probes() -> None:
    probe = ScriptedProbe()
    probe.observed_failure(REFUSED)
    assert (probe.state, probe.detail) == ("starting", "not probed yet")
    assert probe.changes == []


def test_an_instance_without_a_port_is_always_ready() -> None:
    probe = ScriptedProbe(app_port=None)
    probe.observed_failure(REFUSED)
    assert probe.state == "ready"
    assert probe.changes == []
