"""Real requests through a sidecar pair, as in the mesh, the sidecars black boxes
(processes of the data plane ``$DEVMESH_DATAPLANE`` picks, linked to a stand-in control plane).

    client -> sidecar A (web) outbound -> sidecar B (catalog) inbound -> app

Everything runs on 127.0.0.1 with kernel-chosen ports; the stand-in sends A its
snapshots, and collects the telemetry records of both as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.headers import ERROR_HEADER
from proxy.snapshot import Endpoint, Route, Snapshot
from tests.helpers import (
    LOCALHOST,
    Upstream,
    UpstreamHandler,
    closed_port,
    upstream_server,
)
from tests.integration.standin import SidecarUnderTest, StandIn, Wire, standin, standin_sidecar

MiB = 1 << 20
STREAM_SIZE = 20 * MiB
STREAM_GATE_TIMEOUT = 5.0
"""How long one side of a streaming test waits for the other to see the first bytes.
A sidecar that buffers whole bodies makes it wait this long, then the test fails."""


# -- the mesh under test ----------------------------------------------------------


@dataclass
class Destination:
    """One instance of the destination service: its app and its sidecar (B)."""

    app: Upstream
    sidecar: SidecarUnderTest

    @property
    def endpoint(self) -> Endpoint:
        boot = self.sidecar.boot
        return Endpoint(
            instance=boot.instance, version=boot.version, address=self.sidecar.inbound_address
        )


@dataclass
class Mesh:
    plane: StandIn
    caller: SidecarUnderTest
    """Sidecar A, of the calling service ``web``."""
    destinations: list[Destination]
    client: aiohttp.ClientSession

    @property
    def outbound(self) -> str:
        return self.caller.proxy_url

    @property
    def outbound_port(self) -> int:
        port = self.caller.ports.outbound
        assert port is not None
        return port

    async def route(self, snapshot: Snapshot) -> None:
        """Send A ``snapshot``, and wait until it acked it."""
        await self.caller.route(snapshot)


async def wait_records(sidecar: SidecarUnderTest, count: int) -> list[Wire]:
    """Every record of ``sidecar`` that came, once at least ``count`` did."""
    return await sidecar.wait_records(count)


@asynccontextmanager
async def mesh(
    tmp_path: Path,
    handlers: list[UpstreamHandler | None] | None = None,
    *,
    versions: list[str] | None = None,
) -> AsyncIterator[Mesh]:
    """Sidecar A for ``web``, and one app + sidecar B per handler for ``catalog``.

    A's snapshot routes ``catalog`` to every B; the client session talks to A.
    """
    handlers = handlers or [None]
    versions = versions or ["v1"] * len(handlers)
    async with AsyncExitStack() as stack:
        plane = await stack.enter_async_context(standin())
        destinations = []
        for index, (handler, version) in enumerate(zip(handlers, versions, strict=True), 1):
            instance = f"catalog-{version}-{index}"
            app = await stack.enter_async_context(upstream_server(handler, name=instance))
            sidecar = await stack.enter_async_context(
                standin_sidecar(
                    plane,
                    tmp_path,
                    service="catalog",
                    version=version,
                    instance=instance,
                    app_port=app.port,
                )
            )
            destinations.append(Destination(app=app, sidecar=sidecar))
        endpoints = tuple(d.endpoint for d in destinations)
        caller = await stack.enter_async_context(
            standin_sidecar(
                plane,
                tmp_path,
                service="web",
                version="default",
                instance="web-1",
                snapshot=Snapshot(version=1, routes={"catalog": Route(endpoints=endpoints)}),
            )
        )
        client = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        )
        yield Mesh(plane=plane, caller=caller, destinations=destinations, client=client)


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    rest: bytes
    """Every byte after the response head, as it came on the wire."""


async def raw_exchange(port: int, request: bytes, within: float = 5.0) -> RawResponse:
    """Send ``request`` (which should say ``Connection: close``) and read until the server
    closes; fails the test if it does not close ``within`` seconds."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(request)
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(), within)
        except TimeoutError:
            pytest.fail(f"no complete response within {within}s to {request[:60]!r}")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return RawResponse(status=int(status_line.split()[1]), headers=headers, rest=rest)


# -- reaching a service --------------------------------------------------------------


async def test_absolute_form_request_as_an_http_proxy(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        url = URL("http://catalog/items?page=2&q=a%2Fb", encoded=True)
        async with m.client.get(url, proxy=m.outbound) as r:
            assert r.status == 200
            assert await r.text() == "catalog-v1-1"
        seen = m.destinations[0].app.requests
        assert [(s.method, s.raw_path) for s in seen] == [("GET", "/items?page=2&q=a%2Fb")]


async def test_absolute_form_on_a_raw_socket(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        response = await raw_exchange(
            m.outbound_port,
            b"GET http://catalog/a%2Fb/items?q=%41%20 HTTP/1.1\r\n"
            b"Host: catalog\r\nConnection: close\r\n\r\n",
        )
        assert response.status == 200
        assert response.rest == b"catalog-v1-1"
        assert m.destinations[0].app.requests[0].raw_path == "/a%2Fb/items?q=%41%20"


@pytest.mark.parametrize("host", ["catalog", "catalog:80", "CATALOG"])
async def test_origin_form_with_a_host_header(tmp_path: Path, host: str) -> None:
    async with mesh(tmp_path) as m:
        async with m.client.post(
            m.outbound + "/orders?id=7", headers={"Host": host}, data=b"payload"
        ) as r:
            assert r.status == 200, await r.text()
            assert await r.text() == "catalog-v1-1"
        seen = m.destinations[0].app.requests
        assert [(s.method, s.raw_path) for s in seen] == [("POST", "/orders?id=7")]


async def test_connect_tunnels_are_refused(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        response = await raw_exchange(
            m.outbound_port,
            b"CONNECT catalog:443 HTTP/1.1\r\nHost: catalog:443\r\nConnection: close\r\n\r\n",
        )
        assert response.status == 501
        assert response.headers[ERROR_HEADER] == "tunnel-unsupported"
        assert m.destinations[0].app.requests == []


# -- streaming -------------------------------------------------------------------


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def test_a_large_chunked_upload_is_streamed_through(tmp_path: Path) -> None:
    data = payload(STREAM_SIZE)
    app_got_first_bytes = asyncio.Event()
    seen: dict[str, object] = {}

    async def sink(request: web.BaseRequest) -> web.StreamResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            app_got_first_bytes.set()
            digest.update(chunk)
            size += len(chunk)
        seen.update(transfer_encoding=request.headers.get("Transfer-Encoding"))
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    app_saw_bytes_before_the_end: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        yield data[:MiB]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app_got_first_bytes.wait(), STREAM_GATE_TIMEOUT)
        app_saw_bytes_before_the_end.append(app_got_first_bytes.is_set())
        for start in range(MiB, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    async with (
        mesh(tmp_path, [sink]) as m,
        m.client.post("http://catalog/upload", data=body(), proxy=m.outbound) as r,
    ):
        assert r.status == 200, await r.text()
        result = await r.json()
    assert app_saw_bytes_before_the_end == [True], (
        "the app saw nothing of the upload while the client held back the rest: "
        "a sidecar buffers request bodies"
    )
    assert result == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert seen["transfer_encoding"] == "chunked"


async def test_a_large_download_is_streamed_through(tmp_path: Path) -> None:
    data = payload(STREAM_SIZE)
    client_got_first_bytes = asyncio.Event()
    upstream_finished = asyncio.Event()
    client_saw_bytes_before_the_end: list[bool] = []

    async def source(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: chunked
        await response.prepare(request)
        await response.write(data[:MiB])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client_got_first_bytes.wait(), STREAM_GATE_TIMEOUT)
        client_saw_bytes_before_the_end.append(client_got_first_bytes.is_set())
        for start in range(MiB, len(data), 256 * 1024):
            await response.write(data[start : start + 256 * 1024])
        await response.write_eof()
        upstream_finished.set()
        return response

    async with (
        mesh(tmp_path, [source]) as m,
        m.client.get("http://catalog/download", proxy=m.outbound) as r,
    ):
        assert r.status == 200
        first = await r.content.readany()
        finished_before_first_bytes = upstream_finished.is_set()
        client_got_first_bytes.set()
        digest, size = hashlib.sha256(first), len(first)
        async for chunk in r.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
    assert first, "no response bytes"
    assert not finished_before_first_bytes, "the first bytes only came once the upstream was done"
    assert client_saw_bytes_before_the_end == [True], (
        "the client saw nothing while the app held back the rest: a sidecar buffers responses"
    )
    assert (size, digest.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())


# -- connections and balancing ------------------------------------------------------


async def test_upstream_connections_are_pooled(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        # The client opens a new connection per request; the sidecars must not.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as client:
            for i in range(50):
                async with client.get(m.outbound + f"/n/{i}", headers={"Host": "catalog"}) as r:
                    assert r.status == 200
                    await r.read()
        app = m.destinations[0].app
        assert len(app.requests) == 50
        assert len(app.peer_ports) <= 2, (
            f"the app saw {len(app.peer_ports)} connections for 50 sequential requests"
        )


async def test_round_robin_over_two_instances_is_even(tmp_path: Path) -> None:
    async with mesh(tmp_path, [None, None]) as m:
        answers = []
        for _ in range(50):
            async with m.client.get("http://catalog/", proxy=m.outbound) as r:
                answers.append(await r.text())
        assert answers.count("catalog-v1-1") == 25
        assert answers.count("catalog-v1-2") == 25
        assert [len(d.app.requests) for d in m.destinations] == [25, 25]


async def test_a_new_snapshot_applies_to_the_next_request(tmp_path: Path) -> None:
    async with mesh(tmp_path, [None, None]) as m:
        first, second = m.destinations
        await m.route(Snapshot(2, {"catalog": Route(endpoints=(second.endpoint,))}))
        for _ in range(3):
            async with m.client.get("http://catalog/", proxy=m.outbound) as r:
                assert await r.text() == "catalog-v1-2"
        assert first.app.requests == []


async def test_a_split_sends_each_version_its_share(tmp_path: Path) -> None:
    async with mesh(tmp_path, [None, None], versions=["v1", "v2"]) as m:
        endpoints = tuple(d.endpoint for d in m.destinations)
        await m.route(
            Snapshot(2, {"catalog": Route(endpoints=endpoints, split={"v1": 0, "v2": 100})})
        )
        for _ in range(5):
            async with m.client.get("http://catalog/", proxy=m.outbound) as r:
                assert await r.text() == "catalog-v2-2"


# -- headers -----------------------------------------------------------------------


async def test_hop_by_hop_headers_do_not_reach_the_app(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        headers = {
            "Connection": "x-custom, keep-alive",
            "X-Custom": "secret",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-End-To-End": "kept",
        }
        async with m.client.get("http://catalog/h", proxy=m.outbound, headers=headers) as r:
            assert r.status == 200
        seen = m.destinations[0].app.requests[0].headers
        assert "X-Custom" not in seen, "a header named by Connection reached the app"
        assert "Keep-Alive" not in seen
        assert "Proxy-Authorization" not in seen
        assert "x-custom" not in seen.get("Connection", "").lower()
        assert seen["X-End-To-End"] == "kept"


async def test_hop_by_hop_headers_of_the_response_do_not_reach_the_client(
    tmp_path: Path,
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(
            text="ok",
            headers={
                "Connection": "keep-alive, X-Resp-Hop",
                "X-Resp-Hop": "1",
                "Proxy-Authenticate": "Basic",
                "X-Resp-Kept": "2",
            },
        )

    async with mesh(tmp_path, [handler]) as m:
        response = await raw_exchange(
            m.outbound_port,
            b"GET /r HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
        )
        assert response.status == 200
        assert response.headers["X-Resp-Kept"] == "2"
        assert "X-Resp-Hop" not in response.headers
        assert "Proxy-Authenticate" not in response.headers


async def test_the_destination_learns_the_source_service_and_the_app_does_not(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path) as m:
        async with m.client.get("http://catalog/s", proxy=m.outbound) as r:
            assert r.status == 200
        (inbound,) = await wait_records(m.destinations[0].sidecar, 1)
        assert inbound["source"] == "web"
        seen = m.destinations[0].app.requests[0].headers
        assert not [h for h in seen if h.lower().startswith("x-devmesh-")], dict(seen)


async def test_a_forged_source_header_is_replaced(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        forged = {"X-Devmesh-Source": "admin", "x-devmesh-anything": "forged"}
        async with m.client.get("http://catalog/f", proxy=m.outbound, headers=forged) as r:
            assert r.status == 200
        (inbound,) = await wait_records(m.destinations[0].sidecar, 1)
        assert inbound["source"] == "web", "the client forged its identity"
        seen = m.destinations[0].app.requests[0].headers
        assert "x-devmesh-anything" not in seen
        assert "x-devmesh-source" not in seen


async def test_a_call_that_did_not_come_through_a_sidecar_is_external(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        b = m.destinations[0].sidecar
        async with m.client.get(f"http://{LOCALHOST}:{b.ports.inbound}/direct") as r:
            assert await r.text() == "catalog-v1-1"
        (inbound,) = await wait_records(b, 1)
        assert (inbound["source"], inbound["destination"]) == ("external", "catalog")


# -- failures ------------------------------------------------------------------------


async def test_a_service_without_endpoints_is_503_no_healthy_upstream(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        await m.route(Snapshot(2, {"catalog": Route(endpoints=())}))
        async with m.client.get("http://catalog/x", proxy=m.outbound) as r:
            assert r.status == 503
            assert r.headers[ERROR_HEADER] == "no-healthy-upstream"
            assert "catalog" in await r.text()
        (record,) = await wait_records(m.caller, 1)
        assert (record["status"], record["error"]) == (503, "no-healthy-upstream")


async def test_an_endpoint_with_a_closed_port_is_503_connect_failure(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        dead = Endpoint("catalog-v1-9", "v1", f"{LOCALHOST}:{closed_port()}")
        await m.route(Snapshot(2, {"catalog": Route(endpoints=(dead,))}))
        async with m.client.get("http://catalog/x", proxy=m.outbound) as r:
            assert r.status == 503
            assert r.headers[ERROR_HEADER] == "connect-failure"
            assert "catalog-v1-9" in await r.text()
        (record,) = await wait_records(m.caller, 1)
        assert (record["status"], record["error"], record["instance"]) == (
            503,
            "connect-failure",
            "catalog-v1-9",
        )


def cut_after(sent: int, chunked: bool) -> UpstreamHandler:
    """An app that starts a 1 MiB response, sends ``sent`` bytes of it, then closes."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse()
        if not chunked:
            response.content_length = MiB
        await response.prepare(request)
        await response.write(b"x" * sent)
        assert request.transport is not None
        request.transport.close()
        return response

    return handler


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_app_that_dies_mid_body_is_not_a_complete_response(
    tmp_path: Path, chunked: bool
) -> None:
    async with mesh(tmp_path, [cut_after(64 * 1024, chunked)]) as m:
        try:
            async with m.client.get(
                "http://catalog/cut", proxy=m.outbound, timeout=aiohttp.ClientTimeout(total=5)
            ) as r:
                status, body = r.status, await r.read()
        except aiohttp.ClientError:
            pass
        except TimeoutError:
            pytest.fail("the client hung on a response the app had cut short")
        else:
            pytest.fail(f"a cut response reached the client as complete: {status}, {len(body)} B")
        (outbound,) = await wait_records(m.caller, 1)
        (inbound,) = await wait_records(m.destinations[0].sidecar, 1)
        assert outbound["error"] == "reset"
        assert inbound["error"] == "reset"


async def test_a_caller_that_hangs_up_is_not_counted_as_an_upstream_reset(
    tmp_path: Path,
) -> None:
    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(4096):  # 256 MiB at most; stops as soon as nobody reads
                await response.write(b"x" * 65536)
        return response

    async with mesh(tmp_path, [endless]) as m:
        reader, writer = await asyncio.open_connection(LOCALHOST, m.outbound_port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: catalog\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readexactly(256 * 1024), 5)
        writer.transport.abort()  # the caller goes away mid-body
        (outbound,) = await wait_records(m.caller, 1)
        (inbound,) = await wait_records(m.destinations[0].sidecar, 1)
        assert (outbound["status"], outbound["error"]) == (200, "downstream-reset"), (
            "a caller hanging up was recorded as the upstream's failure"
        )
        assert inbound["error"] == "downstream-reset", "the app did nothing wrong"


async def test_an_app_cannot_pass_its_response_off_as_the_mesh_s(tmp_path: Path) -> None:
    async def forger(request: web.BaseRequest) -> web.StreamResponse:
        headers = {ERROR_HEADER: "no-healthy-upstream", "X-Devmesh-Source": "admin"}
        return web.Response(status=503, text="the app's own 503", headers=headers)

    async with mesh(tmp_path, [forger]) as m:
        async with m.client.get("http://catalog/forge", proxy=m.outbound) as r:
            assert r.status == 503
            assert await r.text() == "the app's own 503"
            mesh_headers = {
                k: v for k, v in r.headers.items() if k.lower().startswith("x-devmesh-")
            }
        assert mesh_headers == {}, (
            f"the app's response carries {mesh_headers}: a caller takes it for the mesh's"
        )


async def test_absolute_form_host_wins_over_the_host_header(tmp_path: Path) -> None:
    # RFC 9112 3.2.2: a proxy ignores Host for an absolute-form target and
    # replaces it with the target's authority.
    async with mesh(tmp_path) as m:
        response = await raw_exchange(
            m.outbound_port,
            b"GET http://catalog/x HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
        )
        assert response.status == 200
        assert m.destinations[0].app.requests[0].headers["Host"] == "catalog"


async def test_a_request_expecting_100_continue_completes(tmp_path: Path) -> None:
    # curl sends "Expect: 100-continue" with large bodies, waits up to 1 s for
    # the 100, then sends the body anyway. The app here (like http.server)
    # never sends 100 itself.
    async with mesh(tmp_path) as m:
        reader, writer = await asyncio.open_connection(LOCALHOST, m.outbound_port)
        try:
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: catalog\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)  # 100, or nothing
            writer.write(b"hello")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(), 5.0)
            except TimeoutError:
                data = b""
        finally:
            writer.transport.abort()
            for destination in m.destinations:  # unblock a hung exchange so teardown is quick
                destination.app.abort_connections()
        assert data.startswith(b"HTTP/1.1 200"), (
            f"no final response to a request with Expect: 100-continue (got {data[:80]!r})"
        )
        assert data.endswith(b"catalog-v1-1")


# -- telemetry -------------------------------------------------------------------------


async def test_each_request_makes_one_record_on_each_side(tmp_path: Path) -> None:
    n = 12
    async with mesh(tmp_path) as m:
        for i in range(n):
            method = "GET" if i % 2 else "POST"
            async with m.client.request(
                method, f"http://catalog/t/{i}?x=1", proxy=m.outbound, data=b"b" if i % 2 else None
            ) as r:
                assert r.status == 200
                await r.read()
        outbound = await wait_records(m.caller, n)
        inbound = await wait_records(m.destinations[0].sidecar, n)
    assert len(outbound) == len(inbound) == n
    for side, recs in (("outbound", outbound), ("inbound", inbound)):
        assert {
            (r["direction"], r["source"], r["destination"], r["version"], r["instance"])
            for r in recs
        } == {(side, "web", "catalog", "v1", "catalog-v1-1")}
        assert [r["status"] for r in recs] == [200] * n
        assert [r["error"] for r in recs] == [None] * n
        assert all(r["latency_ms"] > 0 for r in recs)
        assert [r["path"] for r in recs] == [f"/t/{i}" for i in range(n)]
        assert [r["method"] for r in recs] == ["GET" if i % 2 else "POST" for i in range(n)]


# -- passthrough --------------------------------------------------------------------------


async def test_a_host_outside_the_mesh_is_called_directly(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m, upstream_server(name="outside") as outside:
        async with m.client.get(outside.url + "/abs?q=1", proxy=m.outbound) as r:
            assert await r.text() == "outside"
        async with m.client.get(m.outbound + "/origin", headers={"Host": outside.address}) as r:
            assert await r.text() == "outside"
        assert [s.raw_path for s in outside.requests] == ["/abs?q=1", "/origin"]
        assert all("x-devmesh-source" not in s.headers for s in outside.requests)
        recs = await wait_records(m.caller, 2)
        assert {(r["direction"], r["source"], r["destination"], r["status"]) for r in recs} == {
            ("outbound", "web", LOCALHOST, 200)
        }


async def test_a_request_naming_the_sidecar_itself_is_508_not_a_loop(tmp_path: Path) -> None:
    async with mesh(tmp_path) as m:
        itself = f"{LOCALHOST}:{m.outbound_port}"
        async with m.client.get(m.outbound + "/", headers={"Host": itself}) as r:
            assert r.status == 508
            assert r.headers[ERROR_HEADER] == "loop"
        recs = await wait_records(m.caller, 1)
        assert [(r["status"], r["error"]) for r in recs] == [(508, "loop")]


# -- responses without a body ------------------------------------------------------------


async def no_body_app(request: web.BaseRequest) -> web.StreamResponse:
    if request.path == "/empty":
        return web.Response(status=204)
    if request.path == "/cached":
        return web.Response(status=304, headers={"ETag": '"v1"'})
    return web.Response(text="the body of a GET")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/page", 200), ("GET", "/empty", 204), ("GET", "/cached", 304)],
)
async def test_bodiless_responses_pass_without_a_body_and_without_hanging(
    tmp_path: Path, method: str, path: str, status: int
) -> None:
    async with mesh(tmp_path, [no_body_app]) as m:
        request = f"{method} {path} HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n"
        response = await raw_exchange(m.outbound_port, request.encode())
        assert response.status == status
        assert response.rest == b"", f"{method} {path} -> {status} came with a body"
        if method == "HEAD":
            assert response.headers["Content-Length"] == str(len("the body of a GET"))


async def test_a_connection_is_still_usable_after_bodiless_responses(tmp_path: Path) -> None:
    async with mesh(tmp_path, [no_body_app]) as m:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=5),
        ) as client:
            calls: list[tuple[str, str, Callable[[int], bool]]] = [
                ("HEAD", "/page", lambda s: s == 200),
                ("GET", "/empty", lambda s: s == 204),
                ("GET", "/cached", lambda s: s == 304),
                ("GET", "/page", lambda s: s == 200),
            ]
            for method, path, ok in calls:
                async with client.request(
                    method, m.outbound + path, headers={"Host": "catalog"}
                ) as r:
                    assert ok(r.status), (method, path, r.status)
                    body = await r.read()
            assert body == b"the body of a GET"
        assert [s.raw_path for s in m.destinations[0].app.requests] == [c[1] for c in calls]
