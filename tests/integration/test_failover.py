"""Failover in the caller's sidecar, and what the destination's sidecar makes of a dead app.

    client -> sidecar A (web) outbound -> sidecar B (catalog) inbound -> app, or nothing

A request that never reached an app and has no body is tried once more on
another endpoint; everything else gets the first endpoint's answer. Real
sockets on 127.0.0.1; A's routing is driven with snapshots (no control plane).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.headers import ERROR_HEADER
from proxy.server import Sidecar
from proxy.snapshot import Endpoint, Route, Snapshot
from proxy.telemetry import Record
from tests.helpers import (
    LOCALHOST,
    Upstream,
    UpstreamHandler,
    closed_port,
    running_sidecar,
    upstream_server,
    wait_for,
)

DEAD_APP = "dead app"
"""An instance whose sidecar runs but whose app is gone (``devmesh kill``)."""
DEAD_SIDECAR = "dead sidecar"
"""An endpoint where nothing listens at all (its sidecar is gone too)."""


@dataclass
class Instance:
    name: str
    version: str
    app: Upstream | None = None
    sidecar: Sidecar | None = None
    refused: list[str] = field(default_factory=list)
    """What the inbound sidecar reported as refused by its app (its ``on_app_refused``)."""
    dead_port: int = 0

    @property
    def endpoint(self) -> Endpoint:
        port = self.sidecar.ports.inbound if self.sidecar is not None else self.dead_port
        return Endpoint(self.name, self.version, f"{LOCALHOST}:{port}")

    @property
    def served(self) -> int:
        return len(self.app.requests) if self.app is not None else 0

    def inbound_records(self) -> list[Record]:
        assert self.sidecar is not None
        return self.sidecar.telemetry.take(len(self.sidecar.telemetry))


@dataclass
class Mesh:
    caller: Sidecar
    instances: list[Instance]
    client: aiohttp.ClientSession

    @property
    def proxy(self) -> str:
        return f"http://{LOCALHOST}:{self.caller.ports.outbound}"

    def route(self, split: dict[str, float] | None = None) -> None:
        endpoints = tuple(i.endpoint for i in self.instances)
        versions = tuple(dict.fromkeys(i.version for i in self.instances))
        route = Route(endpoints=endpoints, split=split, versions=versions)
        self.caller.router.update(Snapshot(version=2, routes={"catalog": route}))

    def outbound_records(self) -> list[Record]:
        return self.caller.telemetry.take(len(self.caller.telemetry))


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
                    running_sidecar(
                        tmp_path / instance.name,
                        service="catalog",
                        version=version,
                        instance=instance.name,
                        app_port=app_port,
                    )
                )
                instance.sidecar.on_app_refused = instance.refused.append
            instances.append(instance)
        caller = await stack.enter_async_context(
            running_sidecar(tmp_path / "web-1", service="web", version="default", instance="web-1")
        )
        client = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        )
        result = Mesh(caller, instances, client)
        result.route()
        yield result


async def get(m: Mesh, url: str = "http://catalog/items") -> tuple[int, str, str | None]:
    async with m.client.get(url, proxy=m.proxy) as r:
        return r.status, await r.text(), r.headers.get(ERROR_HEADER)


async def wait_outbound(m: Mesh, count: int) -> list[Record]:
    await wait_for(lambda: len(m.caller.telemetry) >= count, what=f"{count} outbound record(s)")
    return m.outbound_records()


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
        assert {(r.instance, r.version, r.status, r.error) for r in records} == {
            ("catalog-v1-2", "v1", 200, None)
        }, "the record describes the try that answered"
        if dead == DEAD_APP:
            assert [(r.status, r.error) for r in gone.inbound_records()] == [
                (503, "connect-failure")
            ] * 2
            assert gone.sidecar is not None
            port = gone.sidecar.boot.app_port
            assert gone.refused == [f"connection refused on 127.0.0.1:{port} by a request"] * 2


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
        m.route(split={"v1": 100, "v2": 0})
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
        assert (record.instance, record.status) == ("catalog-v1-1", 503)


@pytest.mark.parametrize("dead", [DEAD_APP, DEAD_SIDECAR])
async def test_a_single_dead_endpoint_answers_503_once(tmp_path: Path, dead: str) -> None:
    async with mesh(tmp_path, [dead]) as m:
        status, text, error = await get(m)
        assert (status, error) == (503, "connect-failure")
        assert "catalog-v1-1" in text
        (record,) = await wait_outbound(m, 1)
        assert (record.instance, record.status) == ("catalog-v1-1", 503)
        if dead == DEAD_APP:
            assert len(m.instances[0].inbound_records()) == 1, "tried more than once"


async def test_two_dead_endpoints_are_tried_once_each(tmp_path: Path) -> None:
    async with mesh(tmp_path, [DEAD_APP, DEAD_APP]) as m:
        status, text, error = await get(m)
        assert (status, error) == (503, "connect-failure")
        assert "catalog-v1-2" in text, "the caller gets the answer of the try that answered"
        assert [len(i.inbound_records()) for i in m.instances] == [1, 1]
        (record,) = await wait_outbound(m, 1)
        assert (record.instance, record.status) == ("catalog-v1-2", 503)


async def test_an_app_s_own_connect_failure_503_is_not_taken_for_the_mesh_s(
    tmp_path: Path,
) -> None:
    async def forger(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=503, text="mine", headers={ERROR_HEADER: "connect-failure"})

    async with mesh(tmp_path, [forger, None]) as m:
        assert await get(m) == (503, "mine", None)
        assert m.instances[1].served == 0, "a request that reached an app went again"


async def test_an_app_that_answers_is_not_reported(tmp_path: Path) -> None:
    async def failing(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=500, text="broken")

    async with mesh(tmp_path, [failing]) as m:
        assert (await get(m))[0] == 500
        assert m.instances[0].refused == []
