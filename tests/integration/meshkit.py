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
from dataclasses import dataclass, field
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
from proxy.control import STREAM_PATH
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


# -- a tap on the sidecars' links to the real control plane (added for the black-box ------
# -- test_security / test_hold / test_link_drops / test_controlplane) ---------------------

Wire = dict[str, Any]
"""One JSON object as it went over a link."""


@dataclass
class TappedLink:
    """What went over one sidecar's link through a ``WireTap`` (kept across its dials)."""

    instance: str
    said: list[Wire] = field(default_factory=list)
    """Every message the sidecar sent, its hellos included, in order."""
    told: list[Wire] = field(default_factory=list)
    """Every message it was sent (by the control plane, or by the tap), in order."""
    down: web.WebSocketResponse | None = None
    up: aiohttp.ClientWebSocketResponse | None = None
    request: web.BaseRequest | None = None

    @property
    def connected(self) -> bool:
        return self.down is not None and not self.down.closed

    @property
    def hellos(self) -> int:
        """How many times it said hello: how many times it dialed and linked."""
        return len(self.of_type("hello"))

    def of_type(self, kind: str, since: int = 0) -> list[Wire]:
        """Its messages of type ``kind`` from the ``since``-th on."""
        return [m for m in self.said[since:] if m.get("type") == kind]

    def records(self, since: int = 0) -> list[Wire]:
        """Its telemetry records, from its ``since``-th message on, in order."""
        return [
            r
            for m in self.of_type("telemetry", since)
            for r in m.get("records", [])
            if isinstance(r, dict)
        ]

    def snapshots(self, since: int = 0) -> list[Wire]:
        """The snapshots it was sent, from the ``since``-th message sent to it on."""
        return [
            m["snapshot"]
            for m in self.told[since:]
            if m.get("type") == "snapshot" and isinstance(m.get("snapshot"), dict)
        ]

    def installed(self) -> list[Wire]:
        """The identities it was sent and said it installed (``identity-ack``), in order."""
        acked = [m.get("fingerprint") for m in self.of_type("identity-ack")]
        return [
            m for m in self.told if m.get("type") == "identity" and m.get("fingerprint") in acked
        ]


class WireTap:
    """A WebSocket relay between sidecar processes and the real control plane that keeps
    every message both ways: what the control plane hears from each sidecar, and what
    each is told, read without reaching into either. It dials the control plane for each
    sidecar that dials it (answering the control plane's refusal, or 502 if it is away),
    and can cut links (both ends see them break) or stop (no sidecar can dial again)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.port = 0
        self.links: dict[str, TappedLink] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get(STREAM_PATH, self._stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop accepting, and cut what is open."""
        self.cut()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def cut(self, instance: str | None = None) -> None:
        """Break the link of ``instance`` (or every link) at once, both ends."""
        for link in self.links.values():
            if instance is not None and link.instance != instance:
                continue
            if link.request is not None and link.request.transport is not None:
                link.request.transport.abort()
            if link.up is not None:
                transport = link.up.get_extra_info("transport")
                if transport is not None:
                    transport.abort()

    def link(self, instance: str) -> TappedLink:
        """The link of ``instance``'s sidecar (it said hello through the tap)."""
        found = self.links.get(instance)
        assert found is not None, f"the sidecar of {instance} has not said hello"
        return found

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, check: Callable[[], Any], what: str, within: float = 10.0) -> Any:
        """Wait until ``check()`` is truthy (tried again at each message); its value."""
        async with self._changed:
            try:
                return await asyncio.wait_for(self._changed.wait_for(check), within)
            except TimeoutError:
                pytest.fail(f"timed out after {within:g}s waiting for {what}")

    async def said(self, instance: str, kind: str, since: int = 0, within: float = 10.0) -> Wire:
        """Wait until ``instance``'s sidecar said a message of type ``kind`` from its
        ``since``-th on; the first such."""

        def found() -> Wire | None:
            link = self.links.get(instance)
            return next(iter(link.of_type(kind, since)), None) if link else None

        message: Wire = await self.wait(found, f"a {kind} from {instance}", within)
        return message

    async def barrier(self, instance: str) -> None:
        """Send ``instance``'s sidecar again the last snapshot it was sent, and wait for its
        answer: every message it was sent before has been taken by then (it answers in
        order). The answer goes on to the control plane, which sent that snapshot."""
        link = self.link(instance)
        assert link.connected, f"{instance} is linked"
        assert link.down is not None
        [*_, last] = link.snapshots()
        since = len(link.said)
        message = {"type": "snapshot", "snapshot": last}
        link.told.append(message)
        await link.down.send_json(message)
        await self.wait(
            lambda: any(
                m.get("type") in ("ack", "nack") and m.get("version") == last.get("version")
                for m in link.said[since:]
            ),
            f"the answer of {instance} to snapshot {last.get('version')} again",
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {"Authorization": request.headers.get("Authorization", "")}
        try:
            up = await self._session.ws_connect(self.plane.url + STREAM_PATH, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text="the control plane refused the link")
        except (aiohttp.ClientError, OSError):
            return web.Response(status=502, text="the control plane is away")
        down = web.WebSocketResponse()
        await down.prepare(request)
        link: TappedLink | None = None

        async def from_sidecar() -> None:
            nonlocal link
            async for message in down:
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = message.json()
                    if link is None and isinstance(data, dict) and data.get("type") == "hello":
                        instance = str(data["node"]["instance"])
                        link = self.links.setdefault(instance, TappedLink(instance))
                        link.down, link.up, link.request = down, up, request
                    if link is not None and isinstance(data, dict):
                        link.said.append(data)
                    await up.send_str(message.data)
                    await self._notify()
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await up.send_bytes(message.data)

        async def from_controlplane() -> None:
            async for message in up:
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = message.json()
                    if link is not None and isinstance(data, dict):
                        link.told.append(data)
                    await down.send_str(message.data)
                    await self._notify()
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await down.send_bytes(message.data)

        pumps = [asyncio.ensure_future(from_sidecar()), asyncio.ensure_future(from_controlplane())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            code = up.close_code or 1001
            if not down.closed:
                await down.close(code=code)
            if not up.closed:
                await up.close(code=down.close_code or 1001)
            await self._notify()
        return down


class _DialingTap(ControlPlane):
    """The real control plane as ``sidecar_process`` uses it, with the tap's address for
    the sidecar's link: its workspace and its API are the plane's own."""

    def __init__(self, plane: ControlPlane, tap: WireTap) -> None:
        super().__init__(plane.workspace, plane.cert_ttl)
        self.real = plane
        self.tap = tap

    @property
    def url(self) -> str:
        return self.tap.url

    @property
    def mesh(self) -> Mesh:
        return self.real.mesh

    def client(self, token: str | None = None) -> ControlPlaneClient:
        return self.real.client(token)


@asynccontextmanager
async def wire_tap(plane: ControlPlane) -> AsyncIterator[WireTap]:
    """A started ``WireTap`` on ``plane``, stopped on the way out."""
    tap = WireTap(plane)
    await tap.start()
    try:
        yield tap
    finally:
        await tap.stop()


@asynccontextmanager
async def tapped_sidecar(
    tap: WireTap,
    instance: str,
    service: str,
    version: str,
    app_port: int | None,
    **extra: Any,
) -> AsyncIterator[SidecarProcess]:
    """``sidecar_process`` on ``tap``'s control plane, its link through ``tap``."""
    async with sidecar_process(
        _DialingTap(tap.plane, tap), instance, service, version, app_port, **extra
    ) as running:
        yield running
