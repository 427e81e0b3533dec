"""proxy.health: readiness probes against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from proxy.health import FAILURES_BEFORE_UNHEALTHY, HealthProbe
from tests.helpers import Upstream, closed_port, upstream_server, wait_for


@dataclass
class HealthApp:
    """An app whose /healthz answers the statuses of ``script`` in turn, then ``status``."""

    status: int = 200
    script: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        status = self.script.pop(0) if self.script else self.status
        if request.path != "/healthz":
            status = 404
        self.answered.append(status)
        return web.Response(status=status, text=f"status {status}")


@asynccontextmanager
async def health_app(status: int = 200) -> AsyncIterator[tuple[HealthApp, Upstream]]:
    app = HealthApp(status=status)
    async with upstream_server(app.handle, name="app") as upstream:
        yield app, upstream


@asynccontextmanager
async def running(probe: HealthProbe) -> AsyncIterator[HealthProbe]:
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def fast_probe(port: int | None, path: str | None, states: list[str] | None = None) -> HealthProbe:
    probe = HealthProbe(port, path, interval_starting=0.01, interval_ready=0.01)
    if states is not None:
        probe.on_change = lambda: states.append(probe.state)
    return probe


async def test_tcp_mode_passes_when_something_listens() -> None:
    async with upstream_server() as upstream:
        probe = HealthProbe(upstream.port, None)
        assert probe.describe() == f"TCP connect to 127.0.0.1:{upstream.port}"
        passed, detail = await probe.check()
    assert passed, detail
    assert str(upstream.port) in detail


async def test_tcp_mode_fails_on_a_closed_port_saying_refused() -> None:
    probe = HealthProbe(closed_port(), None)
    passed, detail = await probe.check()
    assert not passed
    assert "refused" in detail.lower(), detail


async def test_http_mode_200_passes() -> None:
    async with health_app(200) as (app, upstream):
        probe = HealthProbe(upstream.port, "/healthz")
        assert probe.describe() == f"GET http://127.0.0.1:{upstream.port}/healthz"
        passed, detail = await probe.check()
    assert passed, detail
    assert "200" in detail
    assert app.answered == [200]


@pytest.mark.parametrize("status", [404, 302, 499])
async def test_http_mode_answers_below_500_pass(status: int) -> None:
    async with health_app(status) as (_, upstream):
        passed, detail = await HealthProbe(upstream.port, "/healthz").check()
    assert passed, detail


@pytest.mark.parametrize("status", [500, 503])
async def test_http_mode_5xx_fails_naming_the_status(status: int) -> None:
    async with health_app(status) as (_, upstream):
        passed, detail = await HealthProbe(upstream.port, "/healthz").check()
    assert not passed
    assert str(status) in detail


async def test_http_mode_fails_on_a_closed_port_saying_refused() -> None:
    probe = HealthProbe(closed_port(), "/healthz")
    passed, detail = await probe.check()
    assert not passed
    assert "refused" in detail.lower(), detail


async def test_without_a_port_the_instance_is_ready_at_once() -> None:
    states: list[str] = []
    probe = fast_probe(None, None, states)
    assert probe.state == "ready"
    assert probe.describe() == "none"
    await asyncio.wait_for(probe.run(), timeout=5)  # returns: nothing to probe
    assert states == []


async def test_run_goes_from_starting_to_ready_once_the_app_answers() -> None:
    states: list[str] = []
    async with health_app(200) as (app, upstream):
        app.script = [500, 500, 500, 500]
        probe = fast_probe(upstream.port, "/healthz", states)
        assert probe.state == "starting"
        async with running(probe):
            await wait_for(lambda: probe.state == "ready", what="the probe to see the app ready")
    assert app.answered[:5] == [500, 500, 500, 500, 200]
    # the first failure changes the detail (on_change), a starting instance stays starting
    assert states == ["starting", "ready"]


async def test_ready_turns_unhealthy_after_consecutive_failures_then_recovers() -> None:
    states: list[str] = []
    failures_at_change: list[int] = []
    async with health_app(200) as (app, upstream):
        app.script = [200, *[500] * (FAILURES_BEFORE_UNHEALTHY + 2)]
        probe = fast_probe(upstream.port, "/healthz")

        def changed() -> None:
            states.append(probe.state)
            failures_at_change.append(app.answered.count(500))

        probe.on_change = changed
        async with running(probe):
            await wait_for(lambda: "unhealthy" in states, what="the instance to turn unhealthy")
            assert "500" in probe.detail
            await wait_for(lambda: states[-1] == "ready", what="the instance to recover")
    assert states == ["ready", "unhealthy", "ready"], "on_change once per transition"
    assert failures_at_change[1] == FAILURES_BEFORE_UNHEALTHY


async def test_fewer_failures_in_a_row_keep_a_ready_instance_ready() -> None:
    states: list[str] = []
    below = [500] * (FAILURES_BEFORE_UNHEALTHY - 1)
    async with health_app(200) as (app, upstream):
        app.script = [200, *below, 200, *below, 200, *below]
        probe = fast_probe(upstream.port, "/healthz", states)
        async with running(probe):
            await wait_for(
                lambda: len(app.answered) >= 3 * FAILURES_BEFORE_UNHEALTHY + 2,
                what="the scripted probes and two more",
            )
    assert app.answered.count(500) == 3 * len(below)
    assert states == ["ready"], "a ready instance must only change after enough failures"


async def test_tcp_mode_turns_unhealthy_when_the_app_goes_away() -> None:
    states: list[str] = []
    server = upstream_server()
    upstream = await server.__aenter__()
    try:
        probe = fast_probe(upstream.port, None, states)
        async with running(probe):
            await wait_for(lambda: probe.state == "ready", what="ready")
            await server.__aexit__(None, None, None)
            await wait_for(lambda: probe.state == "unhealthy", what="unhealthy once it stopped")
    finally:
        await server.__aexit__(None, None, None)
    assert "refused" in probe.detail.lower(), probe.detail
    assert states == ["ready", "unhealthy"]
