"""What the caller's breaker counts, and what it does with what it ejected, through real
sidecars on real sockets.

    raw client -> ingress gateway (listener for frontend) -> frontend's sidecar inbound -> app

Issue 15 (a): a caller that hangs up, or whose body never arrives, is not the
endpoint's failure: any local process could otherwise eject a service. Only what
the upstream did counts, as in Envoy. (b): an ejected sole endpoint is still
routed to (Envoy's panic threshold), so the service answers as soon as it
recovers. The gateway's routing is driven with snapshots (no control plane).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from devmesh.controlplane.metrics import is_error
from proxy.bootstrap import GatewayListener
from proxy.outlier import BreakerSummary, EndpointState, OutlierSettings
from proxy.policy import Retries, RoutePolicy
from proxy.server import Sidecar
from proxy.snapshot import Endpoint, Route, Snapshot
from proxy.telemetry import Record
from tests.helpers import LOCALHOST, Upstream, running_sidecar, upstream_server, wait_for

PARTIAL_POST = b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 10\r\n\r\nab"
"""The issue's request: ten bytes announced, two sent."""


@dataclass
class Edge:
    """The ingress gateway and the one frontend instance it routes to."""

    gateway: Sidecar
    frontend: Sidecar
    app: Upstream
    behaviour: dict[str, str]
    """``mode``: ``ok`` or ``500`` (the app fails every request)."""
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    @property
    def port(self) -> int:
        return self.gateway.ports.gateway["frontend"]

    def route(self, policy: RoutePolicy | None = None) -> None:
        endpoint = Endpoint("frontend-1", "default", f"{LOCALHOST}:{self.frontend.ports.inbound}")
        route = Route(endpoints=(endpoint,), policy=policy or RoutePolicy())
        self.gateway.router.update(Snapshot(next(self.versions), {"frontend": route}))

    def breaker(self) -> BreakerSummary:
        return self.gateway.destinations.breakers()["frontend"]

    def endpoint(self) -> EndpointState:
        destination = self.gateway.destinations.get("frontend")
        assert destination is not None
        state = destination.detector.endpoint("frontend-1")
        assert state is not None
        return state

    async def records(self, sidecar: Sidecar, count: int) -> list[Record]:
        await wait_for(
            lambda: len(sidecar.telemetry) >= count,
            what=f"{count} record(s) of {sidecar.boot.instance}",
        )
        return sidecar.telemetry.take(len(sidecar.telemetry))

    async def get(self, path: str = "/") -> bytes:
        reader, writer = await asyncio.open_connection(LOCALHOST, self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n".encode())
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()


@asynccontextmanager
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    behaviour = {"mode": "ok"}
    answer_slow = asyncio.Event()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/slow":
            await answer_slow.wait()
            return web.Response(text="late")
        with contextlib.suppress(Exception):  # a body broken off is the test's doing
            await request.read()
        if behaviour["mode"] == "500":
            return web.Response(status=500, text="frontend broke")
        return web.Response(text="frontend")

    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(upstream_server(handle, name="frontend"))
        stack.callback(answer_slow.set)  # first thing on the way out: nothing left waiting
        frontend = await stack.enter_async_context(
            running_sidecar(
                tmp_path / "frontend-1",
                service="frontend",
                version="default",
                instance="frontend-1",
                app_port=app.port,
            )
        )
        gateway = await stack.enter_async_context(
            running_sidecar(
                tmp_path / "ingress",
                service="ingress",
                version="default",
                instance="ingress",
                role="gateway",
                gateway=(GatewayListener(port=0, service="frontend"),),
            )
        )
        built = Edge(gateway, frontend, app, behaviour)
        built.route()
        yield built


def hang_up(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """Close as a client that gives up does: a plain close (FIN), or a reset (RST)."""
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def send_then_hang_up(e: Edge, request: bytes, *, reset: bool) -> None:
    """Send ``request``, wait until the app has it (the request is in flight), hang up."""
    seen = len(e.app.requests)
    _, writer = await asyncio.open_connection(LOCALHOST, e.port)
    writer.write(request)
    await wait_for(lambda: len(e.app.requests) > seen, what="the request to reach the app")
    hang_up(writer, reset=reset)
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


# -- a caller that hangs up --------------------------------------------------------------


async def test_twenty_callers_hanging_up_leave_the_breaker_closed_and_are_not_errors(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        for n in range(10):  # the issue's: two bytes of ten, then gone
            await send_then_hang_up(e, PARTIAL_POST, reset=n % 2 == 1)
        for _ in range(10):  # gives up waiting for a slow answer
            await send_then_hang_up(e, b"GET /slow HTTP/1.1\r\nHost: f\r\n\r\n", reset=True)

        outbound = await e.records(e.gateway, 20)
        assert [(r.status, r.error) for r in outbound] == [(0, "downstream-reset")] * 20
        assert not any(is_error(r.status, r.error) for r in outbound)
        inbound = await e.records(e.frontend, 20)
        assert [(r.status, r.error) for r in inbound] == [(0, "downstream-reset")] * 20, (
            "the frontend's sidecar saw its caller break off: not its app's failure"
        )
        breaker = e.breaker()
        assert (breaker.state, breaker.ejections) == ("closed", 0)
        assert e.endpoint().consecutive_failures == 0
        assert (await e.get()).startswith(b"HTTP/1.1 200"), "the service is still there"


async def test_a_caller_that_half_closes_while_waiting_is_answered_and_counted_as_answered(
    tmp_path: Path,
) -> None:
    # A plain close cannot be told from a half-close, which the sidecar answers: what
    # counts is what the endpoint then did, never the close.
    async with edge(tmp_path) as e:
        e.behaviour["mode"] = "500"
        for _ in range(5):
            await send_then_hang_up(e, b"GET / HTTP/1.1\r\nHost: f\r\n\r\n", reset=False)
        records = await e.records(e.gateway, 5)
        assert [r.status for r in records] == [500] * 5
        assert e.breaker().state == "open", "five real 5xx: the endpoint failed"


# -- a body that never arrives -------------------------------------------------------------


async def test_a_route_timeout_while_the_body_still_arrives_is_the_caller_s_408(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        e.route(RoutePolicy(timeout=0.3))
        reader, writer = await asyncio.open_connection(LOCALHOST, e.port)
        try:
            writer.write(PARTIAL_POST)
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b"x-devmesh-error: body-timeout" in answer
        assert b"was still arriving when the 0.3s timeout" in answer
        (record,) = await e.records(e.gateway, 1)
        assert (record.status, record.error) == (408, "body-timeout")
        assert not is_error(record.status, record.error)
        (inbound,) = await e.records(e.frontend, 1)
        assert (inbound.status, inbound.error) == (0, "downstream-reset")


async def test_a_per_try_timeout_while_the_body_still_arrives_does_not_count(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        retries = Retries(attempts=2, per_try_timeout=0.2, retry_on=("5xx",))
        e.route(RoutePolicy(retries=retries, outlier=OutlierSettings(consecutive_5xx=2)))
        for _ in range(3):
            reader, writer = await asyncio.open_connection(LOCALHOST, e.port)
            try:  # chunked: streamed, so each attempt's timeout runs while it arrives
                writer.write(
                    b"POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"
                )
                answer = await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert e.endpoint().consecutive_failures == 0
        assert e.breaker().state == "closed"


async def test_a_per_try_timeout_of_a_request_sent_whole_still_counts(tmp_path: Path) -> None:
    async with edge(tmp_path) as e:
        retries = Retries(attempts=1, per_try_timeout=0.2, retry_on=("5xx",))
        e.route(RoutePolicy(retries=retries, outlier=OutlierSettings(consecutive_5xx=2)))
        for _ in range(2):
            assert (await e.get("/slow")).startswith(b"HTTP/1.1 504")
        breaker = e.breaker()
        assert (breaker.state, breaker.reason) == ("open", "2 consecutive failures (last: timeout)")


# -- the panic threshold -----------------------------------------------------------------


async def fail_five_times(e: Edge) -> None:
    e.behaviour["mode"] = "500"
    for _ in range(5):
        assert (await e.get()).startswith(b"HTTP/1.1 500")
    breaker = e.breaker()
    assert (breaker.state, breaker.reason) == ("open", "5 consecutive 5xx (last: 500)")


async def test_an_ejected_sole_endpoint_is_still_routed_to_and_answers_once_it_recovers(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:  # Envoy's defaults: 50 % panic threshold
        await fail_five_times(e)
        assert e.breaker().panic
        served = len(e.app.requests)
        assert (await e.get()).startswith(b"HTTP/1.1 500"), "the app's answer, not breaker-open"
        assert len(e.app.requests) == served + 1
        e.behaviour["mode"] = "ok"
        assert (await e.get()).startswith(b"HTTP/1.1 200"), "at once, not in 30 s"
        breaker = e.breaker()
        assert (breaker.state, breaker.panic) == ("open", True), "still ejected, routed to"
        assert breaker.to_json(0.0)["panic"] is True


async def test_with_panic_0_an_ejected_sole_endpoint_takes_nothing_as_before(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        e.route(RoutePolicy(outlier=OutlierSettings(panic_threshold=0.0)))
        await fail_five_times(e)
        e.behaviour["mode"] = "ok"
        served = len(e.app.requests)
        answer = await e.get()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"x-devmesh-error: breaker-open" in answer
        assert len(e.app.requests) == served
        assert not e.breaker().panic
