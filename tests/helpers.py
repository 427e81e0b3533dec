"""Small shared test utilities: waiting on a condition, real upstream servers, real sidecars.

Tests here use real sockets on 127.0.0.1 with ports the kernel picks (port 0),
never mocks, and never sleep to synchronise: they wait on a condition with a
deadline (``wait_for`` / ``wait_until``) and fail with a message saying what
they were waiting for.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.bootstrap import Bootstrap, GatewayListener, Role
from proxy.router import Router
from proxy.server import Sidecar
from proxy.snapshot import EMPTY, Snapshot
from proxy.telemetry import TelemetryBuffer

LOCALHOST = "127.0.0.1"


# -- waiting ------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for polling, not for one await
    what: str = "the condition",
    interval: float = 0.01,
) -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    what: str = "the condition",
    interval: float = 0.01,
) -> None:
    """Blocking ``wait_for`` for synchronous tests (processes, files)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound by the kernel, then released)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


# -- upstream servers ---------------------------------------------------------

UpstreamHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SeenRequest:
    """One request as an upstream server received it."""

    method: str
    raw_path: str
    """The request target exactly as received (path and query, still percent-encoded)."""
    headers: CIMultiDictProxy[str]
    peer_port: int
    """Client-side port of the connection it came on (tells pooled connections apart)."""


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 standing in for an app or any other upstream."""

    name: str
    port: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    transports: list[asyncio.Transport] = field(default_factory=list, repr=False)
    """The connections requests came on (see ``abort_connections``)."""

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def abort_connections(self) -> None:
        """Reset every connection a request came on, as an app that crashes would."""
        for transport in self.transports:
            if not transport.is_closing():
                transport.abort()

    @property
    def peer_ports(self) -> set[int]:
        """Distinct client ports seen: the number of connections requests came on."""
        return {r.peer_port for r in self.requests}


def answer_with_name(name: str) -> UpstreamHandler:
    """A handler replying ``200`` with ``name`` as the body (the default upstream)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(text=name)

    return handle


@asynccontextmanager
async def upstream_server(
    handler: UpstreamHandler | None = None, *, name: str = "upstream"
) -> AsyncIterator[Upstream]:
    """Serve ``handler`` (default: ``answer_with_name(name)``) on 127.0.0.1, port 0.

    Every request is recorded in ``Upstream.requests`` before the handler runs.
    """
    upstream = Upstream(name=name)
    inner = handler or answer_with_name(name)

    async def recording(request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if transport is not None and transport not in upstream.transports:
            upstream.transports.append(transport)
        upstream.requests.append(
            SeenRequest(
                method=request.method,
                raw_path=request.raw_path,
                headers=request.headers,
                peer_port=peer[1] if peer else -1,
            )
        )
        return await inner(request)

    runner = web.ServerRunner(web.Server(recording, access_log=None), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOCALHOST, 0)
        await site.start()
        upstream.port = runner.addresses[0][1]
        yield upstream
    finally:
        await runner.cleanup()


# -- sidecars -----------------------------------------------------------------


def _token_file(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "token"
    token_file.write_text("test-token\n")
    return token_file


@asynccontextmanager
async def running_sidecar(
    state_dir: Path,
    *,
    service: str,
    version: str = "v1",
    instance: str | None = None,
    app_port: int | None = None,
    snapshot: Snapshot = EMPTY,
    role: Role = "sidecar",
    gateway: tuple[GatewayListener, ...] = (),
) -> AsyncIterator[Sidecar]:
    """A started ``proxy.server.Sidecar`` (no control plane), stopped on exit.

    Drive its routing with ``sidecar.router.update(snapshot)`` and read what it
    saw from ``sidecar.telemetry``; ``sidecar.ports`` has the bound ports.
    """
    token_file = _token_file(state_dir)
    boot = Bootstrap(
        service=service,
        version=version,
        instance=instance or f"{service}-{version}-1",
        control_plane="http://127.0.0.1:9",  # never dialled: no ControlLink runs
        token_file=token_file,
        state_dir=state_dir,
        role=role,
        app_port=app_port,
        gateway=gateway,
    )
    sidecar = Sidecar(boot, Router(snapshot), TelemetryBuffer())
    await sidecar.start()
    try:
        yield sidecar
    finally:
        await sidecar.stop()
