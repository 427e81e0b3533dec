"""mTLS between Rust sidecars (``proxy/``'s ``devmesh-proxy``), from outside: a real control
plane issuing real identities (certificates of 4 s, so renewed every 2 s), a Rust caller
sidecar (``frontend``) and a Rust callee sidecar (``catalog``, in front of an aiohttp app),
``catalog`` set to mTLS ``strict`` through the control plane's client. Calls through the
caller go over mTLS (the status's edge says so), a plaintext client straight to the
callee's inbound port is refused, and 500 calls at a steady rate fail none while both
identities are renewed during the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devmesh.client import ControlPlaneClient
from devmesh.workspace import Workspace
from tests.integration.meshkit import PROJECT, ControlPlane, all_synced, serve, wait_until
from tests.integration.test_rust_engine import RustProcess, app, start
from tests.integration.test_rust_sidecar import proxy_binary

__all__ = ["proxy_binary"]  # the session's build of the binary, shared with that module

CERT_TTL = 4.0


@dataclass
class Mesh:
    plane: ControlPlane
    client: ControlPlaneClient
    outbound: int
    callee_inbound: int
    callee: RustProcess

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.outbound}"


async def installed(client: ControlPlaneClient) -> dict[str, str]:
    """The fingerprint each sidecar says it installed."""
    return {
        str(i["instance"]): str(i["fingerprint"])
        for i in (await client.certs())["identities"]
        if i.get("installed")
    }


@pytest.fixture
async def mesh(proxy_binary: Path, tmp_path: Path) -> AsyncIterator[Mesh]:
    """The control plane (short-lived certificates), catalog (app and Rust sidecar) in
    mTLS strict and a Rust frontend sidecar, each holding its identity and synced; the
    processes are killed at teardown whatever happened."""
    workspace = Workspace(tmp_path)
    workspace.ensure()
    workspace.token(create=True)
    plane = ControlPlane(workspace, cert_ttl=CERT_TTL)
    await plane.start()
    processes: list[RustProcess] = []
    try:
        async with serve(app("catalog-v1")) as app_port, plane.client() as client:
            await client.apply_project(PROJECT)
            await client.set_mtls("catalog", "strict")
            catalog = start(proxy_binary, plane, "catalog", "v1", app_port)
            frontend = start(proxy_binary, plane, "frontend", "v1", None)
            processes += [catalog, frontend]
            for p in processes:
                await wait_until(p.is_ready, f"{p.instance} wrote its ready file")
            caller, callee = frontend.ports(), catalog.ports()
            assert caller is not None
            assert callee is not None

            async def identities() -> bool:
                return {"catalog-v1-1", "frontend-v1-1"} <= set(await installed(client))

            await wait_until(identities, "both sidecars installed an identity")
            await wait_until(lambda: all_synced(client, 2), "both sidecars acked the snapshot")
            yield Mesh(plane, client, caller["outbound"], callee["inbound"], catalog)
    finally:
        for p in processes:
            p.kill()
            print(f"--- {p.log_path}\n{p.log()}")
        await plane.stop()


async def get(session: aiohttp.ClientSession, mesh: Mesh) -> tuple[int, bytes]:
    async with session.get("http://catalog/hello", proxy=mesh.proxy) as response:
        return response.status, await response.read()


async def test_calls_go_over_mtls_and_plaintext_to_the_callee_is_refused(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            status, body = await get(session, mesh)
            assert status == 200, body

        async def shown() -> bool:
            edges = (await mesh.client.status())["edges"]
            edge = next((e for e in edges if e["destination"] == "catalog"), None)
            return edge is not None and edge["security"]["mtls_requests"] >= 3

        await wait_until(shown, "status counts the edge's mTLS requests")
        edges = (await mesh.client.status())["edges"]
        edge = next(e for e in edges if e["destination"] == "catalog")
        assert edge["source"] == "frontend"
        assert edge["security"]["mode"] == "strict"
        assert edge["security"]["last"] == "mtls"
        assert edge["security"]["plaintext_requests"] == 0

        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{mesh.callee_inbound}/hello") as response:
                await response.read()

        def refused() -> bool:
            return "a plaintext client, and this service is mTLS strict" in mesh.callee.log()

        await wait_until(refused, "the callee logs the plaintext client it refused")


async def test_500_calls_at_a_steady_rate_fail_none_while_identities_are_renewed(
    mesh: Mesh,
) -> None:
    calls, rate = 500, 100.0  # five seconds of calls: two renewals of a 4 s certificate
    failures: list[str] = []
    before = await installed(mesh.client)
    seen: dict[str, set[str]] = {k: {v} for k, v in before.items()}

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            status, body = await get(session, mesh)
            if status != 200:
                failures.append(f"{status}: {body[:200]!r}")
        except aiohttp.ClientError as exc:
            failures.append(repr(exc))

    async def watch() -> None:
        while True:
            for instance, fingerprint in (await installed(mesh.client)).items():
                seen.setdefault(instance, set()).add(fingerprint)
            await asyncio.sleep(0.2)

    async def paced() -> None:
        start_at = time.monotonic()
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = []
            for i in range(calls):
                # The schedule of a steady rate (pacing, not waiting on anything).
                await asyncio.sleep(max(0.0, start_at + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(session)))
            await asyncio.gather(*tasks)

    watching = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(paced(), timeout=60)
    finally:
        watching.cancel()
    assert failures == [], failures[:5]
    for instance in ("catalog-v1-1", "frontend-v1-1"):
        assert len(seen[instance]) >= 2, f"{instance} was not renewed during the run"
