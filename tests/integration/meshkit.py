"""A control plane and sidecars on real sockets in the test's process, for integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.roster import Roster
from devmesh.controlplane.store import StateStore
from devmesh.pki import DEFAULT_TTL
from devmesh.workspace import Workspace
from proxy.bootstrap import Bootstrap
from proxy.runner import SidecarRunner

PROJECT = {
    "name": "demo",
    "services": {
        "frontend": {"command": "true", "port": 8000, "depends_on": ["catalog"]},
        "catalog": {
            "port": 8000,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true"}},
        },
    },
}


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool], what: str, within: float = 10.0
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting until {what}")
        await asyncio.sleep(0.02)


async def all_synced(client: ControlPlaneClient, count: int) -> bool:
    """``count`` proxies are connected and every one holds the latest snapshot."""
    status = await client.status()
    proxies = status["proxies"]
    return len(proxies) == count and all(
        p["acked_version"] == status["snapshot_version"] for p in proxies
    )


class ControlPlane:
    """A real control plane on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self, workspace: Workspace, cert_ttl: float = DEFAULT_TTL) -> None:
        self.workspace = workspace
        self.cert_ttl = cert_ttl
        self.port = 0
        self.api: ControlPlaneAPI | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mesh(self) -> Mesh:
        assert self.api is not None
        return self.api.mesh

    def client(self, token: str | None = None) -> ControlPlaneClient:
        return ControlPlaneClient(Endpoint(self.url, token or self.workspace.token()))

    async def start(self) -> None:
        mesh = Mesh(
            StateStore(self.workspace.state_file), roster=Roster(self.workspace.roster_file)
        )
        self.api = ControlPlaneAPI(
            mesh, self.workspace.token(), workspace=self.workspace, cert_ttl=self.cert_ttl
        )
        self._runner = web.AppRunner(self.api.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def app_server(name: str) -> AsyncIterator[int]:
    """A stand-in for a service instance: answers every path with its name."""

    async def handle(request: web.BaseRequest) -> web.Response:
        return web.Response(text=name, headers={"x-served-by": name})

    async with serve(handle) as port:
        yield port


@asynccontextmanager
async def serve(
    handle: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], port: int = 0
) -> AsyncIterator[int]:
    """An HTTP server on 127.0.0.1 (``port``, or any free one) answering every request with
    ``handle``; its port."""
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def sidecar(
    plane: ControlPlane,
    instance: str,
    service: str,
    version: str,
    app_port: int | None,
    via: str | None = None,
) -> AsyncIterator[SidecarRunner]:
    """A sidecar linked to ``plane`` (through the address ``via``, a relay, if given)."""
    boot = Bootstrap(
        service=service,
        version=version,
        instance=instance,
        control_plane=via or plane.url,
        token_file=plane.workspace.token_file,
        state_dir=plane.workspace.sidecar_dir(instance),
        app_port=app_port,
    )
    runner = SidecarRunner(boot)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def call_through(runner: SidecarRunner, service: str) -> tuple[int, str]:
    """A request from ``runner``'s instance to ``service``, as an app behind HTTP_PROXY sends it."""
    proxy = f"http://127.0.0.1:{runner.sidecar.ports.outbound}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{service}/items", proxy=proxy) as response,
    ):
        return response.status, await response.text()


class Relay:
    """A TCP relay to ``target`` on 127.0.0.1: a link that the test can cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, and cut what is open."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()

    def cut(self) -> None:
        """Break every relayed connection at once (both ends see it close)."""
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}


@asynccontextmanager
async def relay(target_port: int) -> AsyncIterator[Relay]:
    link = Relay(target_port)
    await link.start()
    try:
        yield link
    finally:
        await link.stop()
