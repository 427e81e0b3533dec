"""A control plane on real sockets in the test's process, and sidecars linked to it, for
integration tests.

A sidecar runs either as a process (``sidecar_process``: started with the command of
``devmesh.runtime.dataplane``, so ``$DEVMESH_DATAPLANE`` picks the Python or the Rust
one; a test that only uses its ports, the control plane's API and the CLI treats it as a
black box), or in the test's own process and event loop (``sidecar``: for the tests
that look inside it, its router, its link, its health probe).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.roster import Roster
from devmesh.controlplane.store import StateStore
from devmesh.pki import DEFAULT_TTL
from devmesh.runtime.bootstraps import sidecar_bootstrap, write_bootstrap
from devmesh.runtime.dataplane import selected
from devmesh.runtime.environment import infra_env
from devmesh.workspace import Workspace, read_json
from proxy.bootstrap import Bootstrap
from proxy.runner import SidecarRunner
from proxy.snapshot import Snapshot

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

    async def push_snapshot(self, instance: str, raw: dict[str, Any]) -> None:
        """Send ``raw`` to ``instance``'s connected sidecar as the snapshot in force, as the
        control plane sends one (``{"type": "snapshot", "snapshot": raw}``), whatever it
        holds: a test's way to hand a sidecar one the control plane would never build."""
        assert self.api is not None, "the control plane is started"
        # The control plane keeps its links to itself; this is the one place a test reaches.
        ws = self.api.sidecars._sockets.get(instance)
        assert ws is not None, f"the sidecar of {instance} is connected"
        await ws.send_json({"type": "snapshot", "snapshot": raw})


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


async def call_through(runner: SidecarRunner | SidecarProcess, service: str) -> tuple[int, str]:
    """A request from ``runner``'s instance to ``service``, as an app behind HTTP_PROXY sends it."""
    if isinstance(runner, SidecarProcess):
        proxy = runner.proxy_url
    else:
        proxy = f"http://127.0.0.1:{runner.sidecar.ports.outbound}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{service}/items", proxy=proxy) as response,
    ):
        return response.status, await response.text()


SIDECAR_START_TIMEOUT = 15.0
"""How long a sidecar process has to listen, link and take the snapshot in force."""
SIDECAR_STOP_TIMEOUT = 10.0
"""How long it has to exit after SIGTERM before it is killed."""


@dataclass
class SidecarProcess:
    """A sidecar running as a process of its own, and what it said it bound."""

    boot: Bootstrap
    process: asyncio.subprocess.Process
    log_path: Path
    inbound: int = 0
    outbound: int = 0
    gateway: dict[str, int] | None = None
    """The port of each gateway listener, by service (the gateway only)."""

    @property
    def instance(self) -> str:
        return self.boot.instance

    @property
    def proxy_url(self) -> str:
        """Its outbound listener, as an app's ``HTTP_PROXY``."""
        return f"http://127.0.0.1:{self.outbound}"

    def exited(self) -> bool:
        return self.process.returncode is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _failed(self, what: str) -> None:
        code = self.process.returncode
        exited = f" (it exited with status {code})" if code is not None else ""
        pytest.fail(f"the sidecar of {self.instance} {what}{exited}; its log:\n{self.log()}")

    async def _wait(self, check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
        deadline = time.monotonic() + SIDECAR_START_TIMEOUT
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            if self.exited():
                self._failed(f"exited before it {what}")
            if time.monotonic() > deadline:
                self._failed(f"had not {what} after {SIDECAR_START_TIMEOUT:g}s")
            await asyncio.sleep(0.02)

    async def _stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``SIDECAR_STOP_TIMEOUT``."""
        if self.exited():
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), SIDECAR_STOP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), SIDECAR_STOP_TIMEOUT)


async def holds_latest(client: ControlPlaneClient, instance: str) -> bool:
    """``instance``'s sidecar is connected and acked the snapshot in force."""
    status = await client.status()
    entry = next((p for p in status["proxies"] if p["instance"] == instance), None)
    return entry is not None and entry["acked_version"] == status["snapshot_version"]


async def snapshot_held(
    plane: ControlPlane, client: ControlPlaneClient, instance: str
) -> Snapshot | None:
    """The control plane's snapshot in force, if ``instance``'s sidecar acked it (so routes
    by it); else ``None``. What a sidecar routes by, seen from outside it."""
    snapshot = plane.mesh.snapshot
    status = await client.status()
    entry = next((p for p in status["proxies"] if p["instance"] == instance), None)
    if entry is None or entry["acked_version"] != snapshot.version:
        return None
    return snapshot


async def endpoints_held(
    plane: ControlPlane, client: ControlPlaneClient, instance: str, service: str
) -> set[str] | None:
    """The instances of ``service`` that ``instance``'s sidecar routes to, if it holds the
    snapshot in force (``None`` if not yet)."""
    snapshot = await snapshot_held(plane, client, instance)
    if snapshot is None:
        return None
    route = snapshot.routes.get(service)
    return {e.instance for e in route.endpoints} if route is not None else set()


@asynccontextmanager
async def sidecar_process(
    plane: ControlPlane,
    instance: str,
    service: str,
    version: str,
    app_port: int | None,
    *,
    listening: bool = True,
    linked: bool = True,
    **extra: Any,
) -> AsyncIterator[SidecarProcess]:
    """A sidecar of ``plane`` started as a process by the data plane ``$DEVMESH_DATAPLANE``
    picks, from a bootstrap in its folder of the workspace (``extra``: more of its fields).
    Entered once it listens (if ``listening``: its ports read from its ready file; a test
    that uses none of them may pass ``False``) and, if ``linked``, once it is connected and
    acked the snapshot in force; stopped on the way out whatever happened (SIGTERM, then
    SIGKILL), its log printed (pytest shows it when the test fails)."""
    boot = sidecar_bootstrap(
        plane.workspace, instance, service, version, plane.url, app_port=app_port, **extra
    )
    log_path = boot.state_dir / "sidecar.log"
    dataplane = selected()
    command = dataplane.command(write_bootstrap(boot))
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=infra_env()
        )
    running = SidecarProcess(boot, process, log_path)
    try:

        def listens() -> bool:
            ports = read_json(boot.ready_file) if boot.ready_file is not None else None
            if not isinstance(ports, dict) or ports.get("pid") != process.pid:
                return False
            running.inbound = int(ports.get("inbound") or 0)
            running.outbound = int(ports.get("outbound") or 0)
            running.gateway = ports.get("gateway")
            return True

        if listening:
            not_yet = (
                " (the Rust sidecar binds no listener yet)" if dataplane.kind == "rust" else ""
            )
            await running._wait(listens, f"written its bound ports to its ready file{not_yet}")
        if linked:
            async with plane.client() as client:
                await running._wait(
                    lambda: holds_latest(client, instance),
                    "connected and acked the snapshot in force",
                )
        yield running
    finally:
        await running._stop()
        print(f"--- {log_path}\n{running.log()}")


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
