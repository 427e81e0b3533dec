"""The Rust sidecar (``proxy/``'s ``devmesh-proxy`` binary) on its control link, against the
real control plane on real sockets: it says hello and acks the snapshot in force, acks each
new one, nacks a bad one with its error (the one in force stays), installs its identity,
answers a hold, dials again after the control plane restarts on the same port, and leaves
routing at once on SIGTERM, exiting 0. The binary is built once per session with cargo."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient
from devmesh.runtime.bootstraps import write_bootstrap
from proxy.bootstrap import Bootstrap
from proxy.snapshot import SnapshotError, parse_snapshot, snapshot_to_wire
from tests.helpers import closed_port
from tests.integration.meshkit import ControlPlane, app_server, serve, wait_until

CRATE = Path(__file__).resolve().parents[2] / "proxy"
INSTANCE = "catalog-v1-1"


@pytest.fixture(scope="session")
def proxy_binary() -> Path:
    """``cargo build`` of the crate (debug), once per session: the binary's path."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH: install a Rust toolchain to build proxy/ (the sidecar)")
    built = subprocess.run(
        [cargo, "build", "-j", "2", "--bin", "devmesh-proxy", "--message-format=json"],
        cwd=CRATE,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"cargo build in {CRATE} failed:\n{built.stderr[-4000:]}")
    for line in built.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            return Path(message["executable"])
    pytest.fail("cargo build named no devmesh-proxy executable")


class RustSidecar:
    """One ``devmesh-proxy`` process, started from a bootstrap the local runtime's way."""

    def __init__(self, binary: Path, plane: ControlPlane, app_port: int | None) -> None:
        workspace = plane.workspace
        state_dir = workspace.sidecar_dir(INSTANCE)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.boot = Bootstrap(
            service="catalog",
            version="v1",
            instance=INSTANCE,
            control_plane=plane.url,
            token_file=workspace.token_file,
            state_dir=state_dir,
            app_port=app_port,
        )
        self.log_path = state_dir / "sidecar.log"
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = write_bootstrap(self.boot)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "--bootstrap", str(path), "--log-level", "debug"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def rust_sidecar(proxy_binary: Path, controlplane: ControlPlane) -> Iterator[RustSidecar]:
    """A Rust sidecar for catalog-v1-1 (not started: set ``boot`` first if need be), killed
    at teardown whatever happened; its log is printed (shown when the test fails)."""
    sidecar = RustSidecar(proxy_binary, controlplane, app_port=None)
    try:
        yield sidecar
    finally:
        sidecar.kill()
        print(f"--- {sidecar.log_path}\n{sidecar.log()}")


@pytest.fixture
async def client(controlplane: ControlPlane) -> AsyncIterator[ControlPlaneClient]:
    async with controlplane.client() as client:
        yield client


async def proxy_entry(client: ControlPlaneClient) -> dict[str, Any] | None:
    status = await client.status()
    return next((dict(p) for p in status["proxies"] if p["instance"] == INSTANCE), None)


async def synced(client: ControlPlaneClient) -> bool:
    """The sidecar is connected and acked the snapshot in force."""
    status = await client.status()
    entry = next((p for p in status["proxies"] if p["instance"] == INSTANCE), None)
    return entry is not None and entry["acked_version"] == status["snapshot_version"]


async def test_it_connects_acks_each_snapshot_and_nacks_a_bad_one(
    rust_sidecar: RustSidecar, controlplane: ControlPlane, client: ControlPlaneClient
) -> None:
    async with app_server("catalog-v1") as app_port:
        rust_sidecar.boot = _with_app_port(rust_sidecar.boot, app_port)
        rust_sidecar.start()
        await wait_until(lambda: synced(client), "it connects and acks the snapshot in force")
        entry = await proxy_entry(client)
        assert entry is not None
        await wait_until(
            lambda: _health(client, "ready"), "it reports ready (its app's port answers)"
        )
        first = (await client.status())["snapshot_version"]

        await client.set_split("catalog", {"v1": 50, "v2": 50})
        second = (await client.status())["snapshot_version"]
        assert second > first
        await wait_until(lambda: synced(client), "it acks the snapshot with the split")
        kept = json.loads(rust_sidecar.boot.snapshot_file.read_text())
        assert kept["version"] == second, "the last good snapshot is kept on disk"

        bad = snapshot_to_wire(controlplane.mesh.snapshot)
        bad["version"] = -1
        with pytest.raises(SnapshotError) as python_says:
            parse_snapshot(bad)
        await controlplane.push_snapshot(INSTANCE, bad)

        async def nacked() -> bool:
            entry = await proxy_entry(client)
            return entry is not None and entry["rejected"] is not None

        await wait_until(nacked, "it nacks the bad snapshot")
        entry = await proxy_entry(client)
        assert entry is not None
        assert entry["rejected"] == str(python_says.value), "the Python sidecar's words"
        assert entry["acked_version"] == second, "the snapshot in force stays"
        assert json.loads(rust_sidecar.boot.snapshot_file.read_text())["version"] == second


async def test_it_installs_its_identity_and_answers_a_hold(
    rust_sidecar: RustSidecar, client: ControlPlaneClient
) -> None:
    rust_sidecar.start()
    await wait_until(lambda: synced(client), "it connects")

    async def installed() -> bool:
        certs = await client.certs()
        return any(i["instance"] == INSTANCE and i["installed"] for i in certs["identities"])

    await wait_until(installed, "it acks its identity with the certificate's fingerprint")
    kept = json.loads((rust_sidecar.boot.state_dir / "identity" / "identity.json").read_text())
    certs = await client.certs()
    issued = next(i for i in certs["identities"] if i["instance"] == INSTANCE)
    assert kept["fingerprint"] == issued["fingerprint"]
    assert kept["spiffe_id"] == issued["spiffe_id"]

    assert await client.hold(INSTANCE) == 0, "held, with no call in flight"
    await client.release(INSTANCE)
    await wait_until(lambda: _health(client, "ready"), "it reports its health again")


async def test_it_dials_again_after_the_control_plane_restarts(
    rust_sidecar: RustSidecar, controlplane: ControlPlane, client: ControlPlaneClient
) -> None:
    rust_sidecar.start()
    await wait_until(lambda: synced(client), "it connects")
    await controlplane.stop()
    await controlplane.start()
    assert INSTANCE not in controlplane.mesh.proxies, "a new control plane knows no link yet"
    async with controlplane.client() as again:
        await wait_until(lambda: synced(again), "it dials again and acks the snapshot in force")
    assert not rust_sidecar.exited()


async def test_sigterm_makes_it_leave_routing_at_once_and_exit_0(
    rust_sidecar: RustSidecar, controlplane: ControlPlane, client: ControlPlaneClient
) -> None:
    port = closed_port()
    rust_sidecar.boot = _with_app_port(rust_sidecar.boot, port)
    rust_sidecar.start()
    await wait_until(lambda: synced(client), "it connects")
    assert await _health(client, "starting"), "its app does not listen yet"
    async with serve(_answer, port):
        await wait_until(lambda: _health(client, "ready"), "it reports ready once the app is up")
    assert rust_sidecar.process is not None
    rust_sidecar.process.send_signal(signal.SIGTERM)
    await wait_until(lambda: INSTANCE not in controlplane.mesh.proxies, "it leaves", within=3)
    assert INSTANCE not in controlplane.mesh.absent, "it said it was leaving: no grace period"
    await wait_until(rust_sidecar.exited, "it exits", within=5)
    assert rust_sidecar.process.returncode == 0, rust_sidecar.log()


def _with_app_port(boot: Bootstrap, app_port: int) -> Bootstrap:
    data = boot.to_dict()
    data["app_port"] = app_port
    return Bootstrap.from_dict(data)


async def _answer(request: web.BaseRequest) -> web.Response:
    return web.Response(text="catalog-v1")


async def _health(client: ControlPlaneClient, state: str) -> bool:
    entry = await proxy_entry(client)
    return entry is not None and entry["health"] == state


def test_a_bad_bootstrap_is_one_sentence_and_exit_2(proxy_binary: Path, tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps({"service": "catalog", "version": "v1"}))
    ran = subprocess.run(
        [str(proxy_binary), "--bootstrap", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 2
    assert ran.stderr == "devmesh-proxy: bootstrap is missing the field 'instance'\n"
    missing = tmp_path / "none.json"
    ran = subprocess.run(
        [str(proxy_binary), "--bootstrap", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 2
    assert ran.stderr == (
        f"devmesh-proxy: cannot read bootstrap file {missing}: No such file or directory\n"
    )
