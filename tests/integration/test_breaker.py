"""What the caller's breaker counts, and what it does with what it ejected, through real
sidecar processes on real sockets.

    raw client -> ingress gateway (listener for frontend) -> frontend's sidecar inbound -> app

Issue 15 (a): a caller that hangs up, or whose body never arrives, is not the
endpoint's failure: any local process could otherwise eject a service. Only what
the upstream did counts, as in Envoy. (b): an ejected sole endpoint is still
routed to (Envoy's panic threshold), so the service answers as soon as it
recovers. The sidecars are processes of the data plane ``$DEVMESH_DATAPLANE`` picks,
linked to a stand-in control plane: the gateway's routing is driven with snapshots
sent on its link, and what the test reads (records, breakers reports) is what
reached the control plane.
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
from proxy.outlier import OutlierSettings
from proxy.policy import Retries, RoutePolicy
from proxy.snapshot import Endpoint, Route, Snapshot
from tests.helpers import LOCALHOST, Upstream, upstream_server, wait_for
from tests.integration.standin import (
    SidecarUnderTest,
    Wire,
    breaker_reports,
    ever_opened,
    standin,
    standin_sidecar,
    wait_breaker,
)

PARTIAL_POST = b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 10\r\n\r\nab"
"""The issue's request: ten bytes announced, two sent."""


@dataclass
class Edge:
    """The ingress gateway and the one frontend instance it routes to."""

    gateway: SidecarUnderTest
    frontend: SidecarUnderTest
    app: Upstream
    behaviour: dict[str, str]
    """``mode``: ``ok`` or ``500`` (the app fails every request)."""
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    @property
    def port(self) -> int:
        return self.gateway.ports.gateway["frontend"]

    async def route(self, policy: RoutePolicy | None = None) -> None:
        endpoint = Endpoint("frontend-1", "default", self.frontend.inbound_address)
        route = Route(endpoints=(endpoint,), policy=policy or RoutePolicy())
        await self.gateway.route(Snapshot(next(self.versions), {"frontend": route}))

    def breaker(self) -> Wire:
        """The last breakers report's summary of the gateway's breaker to frontend."""
        reports = breaker_reports(self.gateway, "frontend")
        assert reports, "the gateway has reported no breaker to frontend"
        return reports[-1]

    async def breaker_becomes(self, state: str) -> Wire:
        return await wait_breaker(self.gateway, "frontend", lambda s: s["state"] == state)

    async def records(self, sidecar: SidecarUnderTest, count: int) -> list[Wire]:
        return await sidecar.wait_records(count)

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
        plane = await stack.enter_async_context(standin())
        app = await stack.enter_async_context(upstream_server(handle, name="frontend"))
        stack.callback(answer_slow.set)  # first thing on the way out: nothing left waiting
        frontend = await stack.enter_async_context(
            standin_sidecar(
                plane,
                tmp_path,
                service="frontend",
                version="default",
                instance="frontend-1",
                app_port=app.port,
            )
        )
        gateway = await stack.enter_async_context(
            standin_sidecar(
                plane,
                tmp_path,
                service="ingress",
                version="default",
                instance="ingress",
                role="gateway",
                gateway=(GatewayListener(port=0, service="frontend"),),
            )
        )
        built = Edge(gateway, frontend, app, behaviour)
        await built.route()
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


def statuses(records: list[Wire]) -> list[tuple[int, str | None]]:
    return [(r["status"], r["error"]) for r in records]


def never_opened(e: Edge) -> bool:
    """No breakers report so far showed the breaker to frontend other than closed, with no
    ejection. Read once the records of the requests have come: a sidecar reports a change
    at once, so one that came with them would be there."""
    return not ever_opened(e.gateway, "frontend") and all(
        s["ejections"] == 0 for s in breaker_reports(e.gateway, "frontend")
    )


async def test_twenty_callers_hanging_up_leave_the_breaker_closed_and_are_not_errors(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        for n in range(10):  # the issue's: two bytes of ten, then gone
            await send_then_hang_up(e, PARTIAL_POST, reset=n % 2 == 1)
        for _ in range(10):  # gives up waiting for a slow answer
            await send_then_hang_up(e, b"GET /slow HTTP/1.1\r\nHost: f\r\n\r\n", reset=True)

        outbound = await e.records(e.gateway, 20)
        assert statuses(outbound) == [(0, "downstream-reset")] * 20
        assert not any(is_error(r["status"], r["error"]) for r in outbound)
        inbound = await e.records(e.frontend, 20)
        assert statuses(inbound) == [(0, "downstream-reset")] * 20, (
            "the frontend's sidecar saw its caller break off: not its app's failure"
        )
        assert never_opened(e)
        assert (await e.get()).startswith(b"HTTP/1.1 200"), "the service is still there"
        # No failure was counted: it takes five real 5xx from here to eject it, not fewer.
        e.behaviour["mode"] = "500"
        for _ in range(4):
            assert (await e.get()).startswith(b"HTTP/1.1 500")
        await e.records(e.gateway, 25)
        assert never_opened(e), "a hang-up was counted as a failure of the endpoint"
        assert (await e.get()).startswith(b"HTTP/1.1 500")
        opened = await e.breaker_becomes("open")
        assert opened["reason"] == "5 consecutive 5xx (last: 500)"


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
        assert [r["status"] for r in records] == [500] * 5
        await e.breaker_becomes("open")  # five real 5xx: the endpoint failed


# -- a body that never arrives -------------------------------------------------------------


async def test_a_route_timeout_while_the_body_still_arrives_is_the_caller_s_408(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        await e.route(RoutePolicy(timeout=0.3))
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
        assert (record["status"], record["error"]) == (408, "body-timeout")
        assert not is_error(record["status"], record["error"])
        (inbound,) = await e.records(e.frontend, 1)
        assert (inbound["status"], inbound["error"]) == (0, "downstream-reset")


async def test_a_per_try_timeout_while_the_body_still_arrives_does_not_count(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        retries = Retries(attempts=2, per_try_timeout=0.2, retry_on=("5xx",))
        await e.route(RoutePolicy(retries=retries, outlier=OutlierSettings(consecutive_5xx=2)))
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
        await e.records(e.gateway, 3)
        assert never_opened(e), "a timeout while the body arrived was counted (2 eject it)"


async def test_a_per_try_timeout_of_a_request_sent_whole_still_counts(tmp_path: Path) -> None:
    async with edge(tmp_path) as e:
        retries = Retries(attempts=1, per_try_timeout=0.2, retry_on=("5xx",))
        await e.route(RoutePolicy(retries=retries, outlier=OutlierSettings(consecutive_5xx=2)))
        for _ in range(2):
            assert (await e.get("/slow")).startswith(b"HTTP/1.1 504")
        breaker = await e.breaker_becomes("open")
        assert breaker["reason"] == "2 consecutive failures (last: timeout)"


# -- the panic threshold -----------------------------------------------------------------


async def fail_five_times(e: Edge) -> Wire:
    """Five 500s through the gateway; the breakers report that shows it open."""
    e.behaviour["mode"] = "500"
    for _ in range(5):
        assert (await e.get()).startswith(b"HTTP/1.1 500")
    breaker = await e.breaker_becomes("open")
    assert breaker["reason"] == "5 consecutive 5xx (last: 500)"
    return breaker


async def test_an_ejected_sole_endpoint_is_still_routed_to_and_answers_once_it_recovers(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:  # Envoy's defaults: 50 % panic threshold
        assert (await fail_five_times(e))["panic"] is True
        served = len(e.app.requests)
        assert (await e.get()).startswith(b"HTTP/1.1 500"), "the app's answer, not breaker-open"
        assert len(e.app.requests) == served + 1
        e.behaviour["mode"] = "ok"
        assert (await e.get()).startswith(b"HTTP/1.1 200"), "at once, not in 30 s"
        await e.records(e.gateway, 7)
        breaker = e.breaker()
        assert (breaker["state"], breaker["panic"]) == ("open", True), "still ejected, routed to"


async def test_with_panic_0_an_ejected_sole_endpoint_takes_nothing_as_before(
    tmp_path: Path,
) -> None:
    async with edge(tmp_path) as e:
        await e.route(RoutePolicy(outlier=OutlierSettings(panic_threshold=0.0)))
        assert (await fail_five_times(e))["panic"] is False
        e.behaviour["mode"] = "ok"
        served = len(e.app.requests)
        answer = await e.get()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b"x-devmesh-error: breaker-open" in answer
        assert len(e.app.requests) == served
        await e.records(e.gateway, 6)
        assert e.breaker()["panic"] is False
