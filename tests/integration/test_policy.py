"""Route policy through real sidecars on real sockets: faults, retries, timeouts, breaker, pool.

    client -> caller's sidecar (web) outbound -> catalog's sidecar inbound -> catalog app

The sidecars are processes of the data plane ``$DEVMESH_DATAPLANE`` picks, linked to a
stand-in control plane that drives the caller's routing with snapshots and collects
the records and breakers reports as they reach it. Statistical checks state their
tolerance; timing checks have generous bounds on the side that a slow machine could
hit, and tight ones on the side that shows a bug.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.faults import Fault, Match
from proxy.headers import ERROR_HEADER, FAULT_HEADER, VERSION_HEADER
from proxy.outlier import OutlierSettings
from proxy.policy import Pool, Retries, RoutePolicy
from proxy.snapshot import Endpoint, Route, Snapshot
from tests.helpers import LOCALHOST, Upstream, upstream_server, wait_for
from tests.integration.standin import (
    SidecarUnderTest,
    Wire,
    ever_opened,
    standin,
    standin_sidecar,
    wait_breaker,
)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
NO_POLICY = RoutePolicy()


@dataclass
class Catalog:
    name: str
    version: str
    app: Upstream
    sidecar: SidecarUnderTest

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, self.version, self.sidecar.inbound_address)


@dataclass
class Mesh:
    caller: SidecarUnderTest
    catalogs: list[Catalog]
    client: aiohttp.ClientSession
    snapshot_version: int = 1
    behaviour: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.caller.proxy_url

    @property
    def outbound(self) -> int:
        port = self.caller.ports.outbound
        assert port is not None
        return port

    async def route(
        self, policy: RoutePolicy = NO_POLICY, split: dict[str, float] | None = None
    ) -> None:
        endpoints = tuple(c.endpoint for c in self.catalogs)
        versions = tuple(dict.fromkeys(c.version for c in self.catalogs))
        route = Route(endpoints=endpoints, split=split, versions=versions, policy=policy)
        self.snapshot_version += 1
        await self.caller.route(Snapshot(self.snapshot_version, {"catalog": route}))

    async def get(self, path: str = "/", **headers: str) -> tuple[int, str, dict[str, str]]:
        async with self.client.get(
            self.url + path, headers={"Host": "catalog", **headers}
        ) as response:
            return response.status, await response.text(), dict(response.headers)

    async def records(self, count: int) -> list[Wire]:
        """Wait until the caller sent at least ``count`` records; all it sent."""
        return await self.caller.wait_records(count, within=30)

    def served(self) -> int:
        return sum(len(c.app.requests) for c in self.catalogs)

    def breaker_never_opened(self) -> bool:
        """No breakers report of the caller so far showed catalog other than closed (read
        once the records of the requests came: a change is reported at once)."""
        return not ever_opened(self.caller, "catalog")


def answering(name: str, behaviour: dict[str, str]) -> Handler:
    """An app answering its name, or failing as ``behaviour[name]`` says (``500``, ``slow``)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        mode = behaviour.get(name, "ok")
        if mode == "500":
            return web.Response(status=500, text=f"{name} broke")
        if mode.startswith("slow"):
            await asyncio.sleep(float(mode.removeprefix("slow")))
        if request.path == "/big":
            return web.Response(body=b"x" * 20_000)
        return web.Response(text=name)

    return handle


@asynccontextmanager
async def mesh(tmp_path: Path, versions: list[str]) -> AsyncIterator[Mesh]:
    behaviour: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        plane = await stack.enter_async_context(standin())
        catalogs = []
        for index, version in enumerate(versions, 1):
            name = f"catalog-{version}-{index}"
            app = await stack.enter_async_context(
                upstream_server(answering(name, behaviour), name=name)
            )
            sidecar = await stack.enter_async_context(
                standin_sidecar(
                    plane,
                    tmp_path,
                    service="catalog",
                    version=version,
                    instance=name,
                    app_port=app.port,
                )
            )
            catalogs.append(Catalog(name, version, app, sidecar))
        caller = await stack.enter_async_context(
            standin_sidecar(plane, tmp_path, service="web", version="default", instance="web-1")
        )
        connector = aiohttp.TCPConnector(limit=50)
        client = await stack.enter_async_context(
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))
        )
        built = Mesh(caller, catalogs, client, behaviour=behaviour)
        await built.route()
        yield built


async def gather_limited(
    n: int, make: Callable[[], Awaitable[object]], at_once: int = 20
) -> list[object]:
    gate = asyncio.Semaphore(at_once)

    async def one() -> object:
        async with gate:
            return await make()

    return list(await asyncio.gather(*(one() for _ in range(n))))


def fault(fault_id: str = "f1", **fields: object) -> Fault:
    return Fault(id=fault_id, **fields)  # type: ignore[arg-type]


# -- faults ----------------------------------------------------------------------------


async def test_twenty_percent_aborts_over_2000_requests_land_within_17_to_23(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(abort_status=503, abort_percent=20.0),)))
        results = await gather_limited(2000, lambda: m.get("/"), at_once=25)
        aborted = [r for r in results if r[0] == 503]  # type: ignore[index]
        assert 0.17 <= len(aborted) / 2000 <= 0.23, f"{len(aborted)} of 2000 aborted"
        assert all(r[2].get(FAULT_HEADER) == "f1" for r in aborted), "marked as injected"  # type: ignore[index]
        assert m.served() == 2000 - len(aborted), "an aborted call never reaches the app"
        records = await m.records(2000)
        assert len(records) == 2000
        assert sum(1 for r in records if r["fault"] == "f1") == len(aborted)
        assert all(r["status"] == 200 for r in records if r["fault"] is None)


async def test_a_200ms_delay_adds_200ms_give_or_take_20_to_the_median(tmp_path: Path) -> None:
    async def median_latency(m: Mesh) -> float:
        async def timed() -> float:
            start = time.perf_counter()
            status, _, _ = await m.get("/")
            assert status == 200
            return time.perf_counter() - start

        return statistics.median(await gather_limited(60, timed, at_once=10))  # type: ignore[type-var]

    async with mesh(tmp_path, ["v1"]) as m:
        base = await median_latency(m)
        await m.route(RoutePolicy(faults=(fault(delay=0.2),)))
        delayed = await median_latency(m)
        assert 0.18 <= delayed - base <= 0.22, (
            f"median {base * 1000:.1f} -> {delayed * 1000:.1f} ms"
        )


async def test_a_split_of_90_to_10_holds_within_3_points(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1", "v2"]) as m:
        await m.route(split={"v1": 90.0, "v2": 10.0})
        results = await gather_limited(2000, lambda: m.get("/"), at_once=25)
        v2 = sum(1 for r in results if r[1] == "catalog-v2-2")  # type: ignore[index]
        assert 0.07 <= v2 / 2000 <= 0.13, f"{v2} of 2000 went to v2"


async def test_a_version_header_pins_one_request_whatever_the_split(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1", "v2"]) as m:
        await m.route(split={"v1": 100.0, "v2": 0.0})
        pinned = {(await m.get("/", **{VERSION_HEADER: "v2"}))[1] for _ in range(5)}
        assert pinned == {"catalog-v2-2"}
        unpinned = {(await m.get("/"))[1] for _ in range(5)}
        assert unpinned == {"catalog-v1-1"}
        status, text, headers = await m.get("/", **{VERSION_HEADER: "v9"})
        assert (status, headers.get(ERROR_HEADER)) == (503, "no-healthy-upstream")
        assert "catalog has no version 'v9'" in text
        assert all(VERSION_HEADER not in r.headers for c in m.catalogs for r in c.app.requests), (
            "the pin is the mesh's, not passed on"
        )


async def test_a_fault_scoped_by_path_method_header_and_source(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        match = Match(path_prefix="/admin", method="GET", headers=(("x-test", "1"),), source="web")
        await m.route(RoutePolicy(faults=(fault(abort_status=418, match=match),)))
        assert (await m.get("/admin/x", **{"x-test": "1"}))[0] == 418
        assert (await m.get("/admin/x"))[0] == 200, "the header must match"
        assert (await m.get("/other", **{"x-test": "1"}))[0] == 200, "the path must match"
        other_source = Match(path_prefix="/admin", source="frontend")
        await m.route(RoutePolicy(faults=(fault(abort_status=418, match=other_source),)))
        assert (await m.get("/admin/x"))[0] == 200, "calls from web are not frontend's"


async def test_an_expired_fault_does_not_apply(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(abort_status=503, expires_at=time.time() - 1),)))
        assert (await m.get("/"))[0] == 200


async def test_a_reset_fault_resets_the_callers_connection(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(abort_reset=True),)))
        # A raw connection: aiohttp's client would quietly send an idempotent GET again.
        reader, writer = await asyncio.open_connection(LOCALHOST, m.outbound)
        writer.write(b"GET / HTTP/1.1\r\nHost: catalog\r\n\r\n")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert m.served() == 0
        [record] = await m.records(1)
        assert (record["error"], record["fault"]) == ("reset", "f1")


async def test_a_hang_holds_the_request_then_resets_it(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(hang=0.4),)))
        start = time.perf_counter()
        with pytest.raises(aiohttp.ClientError):
            await m.get("/")
        assert time.perf_counter() - start >= 0.4
        assert m.served() == 0


async def test_a_bandwidth_limit_paces_the_answer(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(bandwidth=40_000),)))
        start = time.perf_counter()
        status, body, _ = await m.get("/big")
        took = time.perf_counter() - start
        assert (status, len(body)) == (200, 20_000)
        assert 0.4 <= took <= 1.5, f"20 kB at 40 kB/s took {took:.2f}s"


# -- retries and timeouts ------------------------------------------------------------------


async def test_retries_stay_on_under_faults_and_try_each_attempt_anew(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        retries = Retries(attempts=3, retry_on=("5xx",))
        await m.route(
            RoutePolicy(retries=retries, faults=(fault(abort_status=503, abort_percent=50.0),))
        )
        results = await gather_limited(400, lambda: m.get("/"), at_once=20)
        failed = sum(1 for r in results if r[0] == 503)  # type: ignore[index]
        # All three attempts abort with probability 1/8: 50 of 400 expected.
        assert 20 <= failed <= 90, f"{failed} of 400 failed after 3 attempts"
        records = await m.records(400)
        assert len(records) == 400
        assert max(r["retries"] for r in records) == 2
        assert sum(r["retries"] for r in records) > 100


async def test_a_request_with_a_body_is_retried_from_its_kept_copy(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        m.behaviour["catalog-v1-1"] = "500"
        await m.route(RoutePolicy(retries=Retries(attempts=2, retry_on=("5xx",))))
        async with m.client.post(
            m.url + "/order", data=b"one mug", headers={"Host": "catalog"}
        ) as r:
            assert r.status == 500
        assert len(m.catalogs[0].app.requests) == 2, "sent twice: the body was kept"


async def test_the_route_timeout_answers_504(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        m.behaviour["catalog-v1-1"] = "slow1.0"
        await m.route(RoutePolicy(timeout=0.2))
        start = time.perf_counter()
        status, text, headers = await m.get("/")
        assert time.perf_counter() - start < 0.8
        assert (status, headers.get(ERROR_HEADER)) == (504, "timeout")
        assert "did not answer within 0.2s" in text


async def test_a_per_try_timeout_moves_on_to_the_next_attempt(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1", "v1"]) as m:
        m.behaviour["catalog-v1-1"] = "slow1.0"
        retries = Retries(attempts=2, per_try_timeout=0.2, retry_on=("reset",))
        await m.route(RoutePolicy(retries=retries, lb="round-robin"))
        answers = {(await m.get("/"))[1] for _ in range(4)}
        assert answers == {"catalog-v1-2"}, "every slow first try timed out and moved on"


# -- circuit breaking -----------------------------------------------------------------------


async def test_the_breaker_opens_after_5_consecutive_5xx_then_half_opens_and_closes(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        settings = OutlierSettings(
            base_ejection_time=0.5, max_ejection_percent=100.0, panic_threshold=0.0
        )
        await m.route(RoutePolicy(outlier=settings))
        m.behaviour["catalog-v1-1"] = "500"
        for _ in range(5):
            assert (await m.get("/"))[0] == 500
        status, _, headers = await m.get("/")
        assert (status, headers.get(ERROR_HEADER)) == (503, "breaker-open")
        assert len(m.catalogs[0].app.requests) == 5, "an open breaker sends nothing"
        breaker = await wait_breaker(m.caller, "catalog", lambda s: s["state"] == "open")
        assert "5 consecutive 5xx" in (breaker["reason"] or "")

        m.behaviour["catalog-v1-1"] = "ok"
        await wait_breaker(m.caller, "catalog", lambda s: s["state"] == "half-open", within=3)
        since = len(m.caller.link.breakers)
        assert (await m.get("/"))[0] == 200
        await wait_breaker(m.caller, "catalog", lambda s: s["state"] == "closed", since=since)


async def test_injected_failures_do_not_open_the_breaker(tmp_path: Path) -> None:
    # The endpoint is healthy: only the caller's own sidecar made those 503s.
    async with mesh(tmp_path, ["v1"]) as m:
        await m.route(RoutePolicy(faults=(fault(abort_status=503),)))
        for _ in range(10):
            assert (await m.get("/"))[0] == 503
        await m.records(10)
        assert m.breaker_never_opened()


async def test_pool_overflow_answers_503_and_does_not_count_against_the_endpoint(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        m.behaviour["catalog-v1-1"] = "slow0.3"
        # One in flight, one waiting (the wire's least: max_pending is 1 or more), six over.
        await m.route(RoutePolicy(pool=Pool(max_connections=1, max_pending=1, max_requests=1)))
        results = await asyncio.gather(*(m.get("/") for _ in range(8)))
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) >= 1
        overflowed = [r for r in results if r[2].get(ERROR_HEADER) == "overflow"]
        assert len(overflowed) >= 5, statuses
        await m.records(8)
        assert m.breaker_never_opened()


async def test_a_new_snapshot_applies_to_new_requests_while_one_in_flight_finishes(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        m.behaviour["catalog-v1-1"] = "slow0.4"
        await m.route(RoutePolicy())
        in_flight = asyncio.create_task(m.get("/"))
        await wait_for(lambda: m.served() == 1, what="the first request to reach the app")
        await m.route(RoutePolicy(faults=(fault(abort_status=503),)))
        assert (await m.get("/"))[0] == 503, "a new request sees the new snapshot"
        assert (await in_flight)[0] == 200, "the one in flight finished under the old one"


async def test_each_hop_is_a_span_of_the_callers_trace(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert (await m.get("/", traceparent=incoming))[0] == 200
        assert (await m.get("/"))[0] == 200
        first, second = m.catalogs[0].app.requests
        assert first.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert second.headers["traceparent"].startswith("00-")
        assert first.headers["x-request-id"] != second.headers["x-request-id"]
        records = await m.records(2)
        assert records[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path) -> None:
    async with mesh(tmp_path, ["v1"]) as m:
        reader, writer = await asyncio.open_connection(LOCALHOST, m.outbound)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: catalog\r\nContent-Length: 999999999999\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 413")
        assert b"x-devmesh-error: body-too-large" in head.lower()
        assert m.served() == 0
