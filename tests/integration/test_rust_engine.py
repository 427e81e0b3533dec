"""The Rust sidecar's engine (``proxy/``'s ``devmesh-proxy``) on real sockets, from outside:
a real control plane, a Rust caller sidecar (``frontend``) and two Rust callee sidecars
(``catalog`` v1 and v2, each in front of an aiohttp app). A call through the caller's
outbound port (as ``HTTP_PROXY``) reaches an app with the mesh's headers; a 50/50 split
lands on both versions; an abort fault answers 503 marked injected; the control plane's
status counts the edge (telemetry arrives); 1,000 calls at a steady rate all succeed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient
from devmesh.runtime.bootstraps import write_bootstrap
from proxy.bootstrap import Bootstrap
from tests.integration.meshkit import ControlPlane, all_synced, serve, wait_until
from tests.integration.test_rust_sidecar import proxy_binary

__all__ = ["proxy_binary"]  # the session's build of the binary, shared with that module


@dataclass
class RustProcess:
    """One ``devmesh-proxy`` process and where its ready file and log are."""

    instance: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path

    def ports(self) -> dict[str, Any] | None:
        if not self.ready_file.exists():
            return None
        data: dict[str, Any] = json.loads(self.ready_file.read_text())
        return data

    def is_ready(self) -> bool:
        return self.ports() is not None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start(
    binary: Path, plane: ControlPlane, service: str, version: str, app_port: int | None
) -> RustProcess:
    instance = f"{service}-{version}-1"
    state_dir = plane.workspace.sidecar_dir(instance)
    state_dir.mkdir(parents=True, exist_ok=True)
    ready = state_dir / "ready.json"
    boot = Bootstrap(
        service=service,
        version=version,
        instance=instance,
        control_plane=plane.url,
        token_file=plane.workspace.token_file,
        state_dir=state_dir,
        app_port=app_port,
        ready_file=ready,
    )
    path = write_bootstrap(boot)
    log_path = state_dir / "sidecar.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(binary), "--bootstrap", str(path), "--log-level", "info"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return RustProcess(instance, process, ready, log_path)


def app(name: str) -> Any:
    """An app that says who it is and what it got."""

    async def handle(request: web.BaseRequest) -> web.Response:
        said = {
            "name": name,
            "path": request.path_qs,
            "host": request.headers.get("Host"),
            "traceparent": request.headers.get("traceparent"),
            "request_id": request.headers.get("x-request-id"),
            "source": request.headers.get("x-devmesh-source"),
        }
        return web.json_response(said, headers={"x-served-by": name})

    return handle


@dataclass
class Mesh:
    plane: ControlPlane
    client: ControlPlaneClient
    outbound: int

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.outbound}"

    async def synced(self) -> None:
        await wait_until(lambda: all_synced(self.client, 3), "every sidecar acked the snapshot")


@pytest.fixture
async def mesh(proxy_binary: Path, controlplane: ControlPlane) -> AsyncIterator[Mesh]:
    """The control plane, catalog v1 and v2 (apps and Rust sidecars) and a Rust frontend
    sidecar, every one synced; the processes are killed at teardown whatever happened."""
    processes: list[RustProcess] = []
    try:
        async with (
            serve(app("catalog-v1")) as v1_port,
            serve(app("catalog-v2")) as v2_port,
            controlplane.client() as client,
        ):
            processes.append(start(proxy_binary, controlplane, "catalog", "v1", v1_port))
            processes.append(start(proxy_binary, controlplane, "catalog", "v2", v2_port))
            frontend = start(proxy_binary, controlplane, "frontend", "v1", None)
            processes.append(frontend)
            for p in processes:
                await wait_until(p.is_ready, f"{p.instance} wrote its ready file")
            ports = frontend.ports()
            assert ports is not None
            assert ports["outbound"]
            found = Mesh(controlplane, client, ports["outbound"])
            await found.synced()
            yield found
    finally:
        for p in processes:
            p.kill()
            print(f"--- {p.log_path}\n{p.log()}")


async def get(
    session: aiohttp.ClientSession, mesh: Mesh, path: str = "/hello"
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(f"http://catalog{path}", proxy=mesh.proxy) as response:
        return response.status, dict(response.headers), await response.read()


async def test_a_call_through_the_outbound_port_reaches_the_app_with_the_mesh_headers(
    mesh: Mesh,
) -> None:
    async with aiohttp.ClientSession() as session:
        status, headers, body = await get(session, mesh, "/hello?x=1")
    assert status == 200, body
    said = json.loads(body)
    assert said["name"] in ("catalog-v1", "catalog-v2")
    assert said["path"] == "/hello?x=1"
    assert said["host"] == "catalog"
    assert said["traceparent"].startswith("00-")
    assert said["request_id"]
    assert said["source"] is None, "the source header is between sidecars only"
    assert "x-devmesh-error" not in {k.lower() for k in headers}


async def test_a_split_of_50_50_lands_on_both_versions(mesh: Mesh) -> None:
    await mesh.client.set_split("catalog", {"v1": 50, "v2": 50})
    await mesh.synced()
    served: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for _ in range(60):
            status, headers, _ = await get(session, mesh)
            assert status == 200
            served.add(headers["x-served-by"])
    assert served == {"catalog-v1", "catalog-v2"}


async def test_an_abort_fault_answers_503_marked_injected(mesh: Mesh) -> None:
    fault = await mesh.client.add_fault("catalog", {"abort": 503}, None)
    await mesh.synced()
    async with aiohttp.ClientSession() as session:
        status, headers, body = await get(session, mesh)
    assert status == 503
    assert headers.get("x-devmesh-fault") == fault["id"]
    assert "x-devmesh-error" not in headers
    assert body == f"fault {fault['id']} injected by devmesh\n".encode()


async def test_the_control_plane_counts_the_edge(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(12):
            assert (await get(session, mesh))[0] == 200

    async def counted() -> bool:
        status = await mesh.client.status()
        edges = [
            e for e in status["edges"] if (e["source"], e["destination"]) == ("frontend", "catalog")
        ]
        return bool(edges) and edges[0]["requests"] >= 12

    await wait_until(counted, "the frontend -> catalog edge counts 12 requests")


async def test_a_thousand_calls_at_a_steady_rate_fail_none(mesh: Mesh) -> None:
    calls, rate = 1000, 250.0  # four seconds of calls
    failures: list[str] = []

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            status, _, body = await get(session, mesh)
            if status != 200:
                failures.append(f"{status}: {body[:200]!r}")
        except aiohttp.ClientError as exc:
            failures.append(repr(exc))

    async def paced() -> None:
        start = time.monotonic()
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = []
            for i in range(calls):
                # The schedule of a steady rate (pacing, not waiting on anything).
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(session)))
            await asyncio.gather(*tasks)

    await asyncio.wait_for(paced(), timeout=60)
    assert failures == [], failures[:5]


def test_a_port_it_cannot_bind_is_exit_status_3(proxy_binary: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        boot = {
            "service": "frontend",
            "version": "v1",
            "instance": "frontend-v1-1",
            "control_plane": "http://127.0.0.1:1",
            "state_dir": str(tmp_path),
            "outbound_port": taken.getsockname()[1],
        }
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(boot))
        ran = subprocess.run(
            [str(proxy_binary), "--bootstrap", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert ran.returncode == 3, ran.stderr
    assert "cannot listen on 127.0.0.1: address already in use" in ran.stderr
