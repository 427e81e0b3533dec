"""Failover in the caller's sidecar, and what the destination's sidecar makes of a dead app.

    client -> sidecar A (web) outbound -> sidecar B (catalog) inbound -> app, or nothing

A request that never reached an app and has no body is tried once more on
another endpoint; everything else gets the first endpoint's answer. Real
sockets on 127.0.0.1; the sidecars are processes of the data plane
``$DEVMESH_DATAPLANE`` picks, linked to a stand-in control plane, which drives A's
routing with snapshots and collects the records every sidecar sends.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

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

DEAD_APP = "dead app"
"""An instance whose sidecar runs but whose app is gone (``devmesh kill``)."""
DEAD_SIDECAR = "dead sidecar"
"""An endpoint where nothing listens at all (its sidecar is gone too)."""


@dataclass
class Instance:
    name: str
    version: str
    app: Upstream | None = None
    sidecar: SidecarUnderTest | None = None
    dead_port: int = 0

    @property
    def endpoint(self) -> Endpoint:
        if self.sidecar is not None:
            return Endpoint(self.name, self.version, self.sidecar.inbound_address)
        return Endpoint(self.name, self.version, f"{LOCALHOST}:{self.dead_port}")

    @property
    def served(self) -> int:
        return len(self.app.requests) if self.app is not None else 0

    async def inbound_records(self, count: int) -> list[Wire]:
        """Wait until its sidecar sent at least ``count`` records; all it sent."""
        assert self.sidecar is not None
        return await self.sidecar.wait_records(count)


@dataclass
class Mesh:
    plane: StandIn
    caller: SidecarUnderTest
    instances: list[Instance]
    client: aiohttp.ClientSession
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    @property
    def proxy(self) -> str:
        return self.caller.proxy_url

    async def route(self, split: dict[str, float] | None = None) -> None:
        endpoints = tuple(i.endpoint for i in self.instances)
        versions = tuple(dict.fromkeys(i.version for i in self.instances))
        route = Route(endpoints=endpoints, split=split, versions=versions)
        await self.caller.route(Snapshot(version=next(self.versions), routes={"catalog": route}))


@asynccontextmanager
async def mesh(
    tmp_path: Path,
    kinds: list[str | UpstreamHandler | None],
    versions: list[str] | None = None,
) -> AsyncIterator[Mesh]:
    """Caller ``web`` and one ``catalog`` endpoint per kind: ``DEAD_APP``, ``DEAD_SIDECAR``,
    or a live app (``None``: one answering its name, or the handler given)."""
    versions = versions or ["v1"] * len(kinds)
    async with AsyncExitStack() as stack:
        plane = await stack.enter_async_context(standin())
        instances = []
        for index, (kind, version) in enumerate(zip(kinds, versions, strict=True), 1):
            instance = Instance(f"catalog-{version}-{index}", version)
            if kind == DEAD_SIDECAR:
                instance.dead_port = closed_port()
            else:
                if kind == DEAD_APP:
                    app_port = closed_port()
                else:
                    assert not isinstance(kind, str)
                    instance.app = await stack.enter_async_context(
                        upstream_server(kind, name=instance.name)
                    )
                    app_port = instance.app.port
                instance.sidecar = await stack.enter_async_context(
                    standin_sidecar(
                        plane,
                        tmp_path,
                        service="catalog",
                        version=version,
                        instance=instance.name,
                        app_port=app_port,
                    )
                )
            instances.append(instance)
        caller = await stack.enter_async_context(
            standin_sidecar(plane, tmp_path, service="web", version="default", instance="web-1")
        )
        client = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        )
        result = Mesh(plane, caller, instances, client)
        await result.route()
        yield result


async def get(m: Mesh, url: str = "http://catalog/items") -> tuple[int, str, str | None]:
    async with m.client.get(url, proxy=m.proxy) as r:
        return r.status, await r.text(), r.headers.get(ERROR_HEADER)


async def wait_outbound(m: Mesh, count: int) -> list[Wire]:
    return await m.caller.wait_records(count)


def statuses(records: list[Wire]) -> list[tuple[int, str | None]]:
    return [(r["status"], r["error"]) for r in records]


# -- a request that never reached an app goes to another endpoint --------------------------


@pytest.mark.parametrize("dead", [DEAD_APP, DEAD_SIDECAR])
async def test_a_get_goes_to_another_endpoint_when_the_first_took_none(
    tmp_path: Path, dead: str
) -> None:
    async with mesh(tmp_path, [dead, None]) as m:
        gone, live = m.instances
        answers = [await get(m) for _ in range(4)]  # the round robin hits the dead one twice
        assert answers == [(200, "catalog-v1-2", None)] * 4
        assert live.served == 4
        records = await wait_outbound(m, 4)
        assert len(records) == 4, "one record per request, not per try"
        assert {(r["instance"], r["version"], r["status"], r["error"]) for r in records} == {
            ("catalog-v1-2", "v1", 200, None)
        }, "the record describes the try that answered"
        if dead == DEAD_APP:
            assert statuses(await gone.inbound_records(2)) == [(503, "connect-failure")] * 2


async def test_a_post_with_an_empty_body_goes_to_another_endpoint(tmp_path: Path) -> None:
    async with mesh(tmp_path, [DEAD_APP, None]) as m:
        async with m.client.post("http://catalog/orders", data=b"", proxy=m.proxy) as r:
            assert (r.status, await r.text()) == (200, "catalog-v1-2")
        live = m.instances[1].app
        assert live is not None
        assert [s.method for s in live.requests] == ["POST"]


async def test_a_chunked_body_that_had_ended_empty_goes_to_another_endpoint(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, [DEAD_APP, None]) as m:
        assert m.caller.ports.outbound is not None
        reader, writer = await asyncio.open_connection(LOCALHOST, m.caller.ports.outbound)
        try:
            writer.write(  # head and empty body in one write: the body has ended on arrival
                b"POST /orders HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n0\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        assert answer.endswith(b"catalog-v1-2")


async def test_a_version_the_split_chose_is_kept_on_the_second_try(tmp_path: Path) -> None:
    async with mesh(tmp_path, [DEAD_APP, None, None], versions=["v1", "v2", "v1"]) as m:
        await m.route(split={"v1": 100, "v2": 0})
        answers = [await get(m) for _ in range(4)]
        assert answers == [(200, "catalog-v1-3", None)] * 4
        assert m.instances[1].served == 0


async def test_a_version_with_no_other_endpoint_answers_with_the_first_try(
    tmp_path: Path,
) -> None:
    async with mesh(tmp_path, [DEAD_APP, None], versions=["v1", "v2"]) as m:
        status, _, error = await get(m, "http://catalog-v1/items")
        assert (status, error) == (503, "connect-failure")
        assert m.instances[1].served == 0, "a version host asked for v1, not for any catalog"


# -- everything else gets the first endpoint's answer ---------------------------------


@pytest.mark.parametrize("dead", [DEAD_APP, DEAD_SIDECAR])
async def test_a_post_with_a_body_is_never_sent_twice(tmp_path: Path, dead: str) -> None:
    async with mesh(tmp_path, [dead, None]) as m:
        async with m.client.post("http://catalog/orders", data=b"order 1", proxy=m.proxy) as r:
            assert r.status == 503
            assert r.headers[ERROR_HEADER] == "connect-failure"
            assert "catalog-v1-1" in await r.text()
        assert m.instances[1].served == 0, "a request whose body was sent once went again"
        (record,) = await wait_outbound(m, 1)
        assert (record["instance"], record["status"]) == ("catalog-v1-1", 503)


@pytest.mark.parametrize("dead", [DEAD_APP, DEAD_SIDECAR])
async def test_a_single_dead_endpoint_answers_503_once(tmp_path: Path, dead: str) -> None:
    async with mesh(tmp_path, [dead]) as m:
        status, text, error = await get(m)
        assert (status, error) == (503, "connect-failure")
        assert "catalog-v1-1" in text
        (record,) = await wait_outbound(m, 1)
        assert (record["instance"], record["status"]) == ("catalog-v1-1", 503)
        if dead == DEAD_APP:
            assert len(await m.instances[0].inbound_records(1)) == 1, "tried more than once"


async def test_two_dead_endpoints_are_tried_once_each(tmp_path: Path) -> None:
    async with mesh(tmp_path, [DEAD_APP, DEAD_APP]) as m:
        status, text, error = await get(m)
        assert (status, error) == (503, "connect-failure")
        assert "catalog-v1-2" in text, "the caller gets the answer of the try that answered"
        (record,) = await wait_outbound(m, 1)
        assert (record["instance"], record["status"]) == ("catalog-v1-2", 503)
        assert [len(await i.inbound_records(1)) for i in m.instances] == [1, 1]


async def test_an_app_s_own_connect_failure_503_is_not_taken_for_the_mesh_s(
    tmp_path: Path,
) -> None:
    async def forger(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=503, text="mine", headers={ERROR_HEADER: "connect-failure"})

    async with mesh(tmp_path, [forger, None]) as m:
        assert await get(m) == (503, "mine", None)
        assert m.instances[1].served == 0, "a request that reached an app went again"


async def test_an_app_that_answers_is_not_reported(tmp_path: Path) -> None:
    # A request whose connection the app refused turns a ready instance unhealthy at once;
    # an answer, a 500 too, is no such thing: its sidecar says nothing new of its health.
    async def failing(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=500, text="broken")

    async with mesh(tmp_path, [failing]) as m:
        sidecar = m.instances[0].sidecar
        assert sidecar is not None

        def health() -> list[Wire]:
            return [sidecar.link.hello["health"], *sidecar.link.of_type("health")]

        await m.plane.wait(lambda: health()[-1]["state"] == "ready", "catalog to be ready")
        told = len(health())
        assert (await get(m))[0] == 500
        assert statuses(await m.instances[0].inbound_records(1)) == [(500, None)]
        assert health()[told:] == [], "an answer was reported as the app refusing"
