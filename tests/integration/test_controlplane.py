"""The control plane with real sidecars on real sockets, as processes (``$DEVMESH_DATAPLANE``
picks which), black boxes: what they route by is read from the control plane (the snapshot
each acked), what they say and whether they are linked from a tap on their link
(``meshkit.WireTap``).

Covers the API's token, snapshot streaming, telemetry, a stream that drops and
comes back, a sidecar that starts while the control plane is away, and what
survives a restart.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devmesh.client import ControlPlaneClient
from devmesh.config import dump_project, parse_project
from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.store import StateStore
from devmesh.errors import ConfigError, DevmeshError, UsageError
from devmesh.workspace import Workspace
from tests.integration.meshkit import (
    PROJECT,
    ControlPlane,
    all_synced,
    app_server,
    call_through,
    endpoints_held,
    sidecar_process,
    snapshot_held,
    tapped_sidecar,
    wait_until,
    wire_tap,
)
from tests.integration.standin import dialed_to


def instance_state(status: dict[str, Any], instance: str) -> str | None:
    for service in status["services"]:
        for entry in service["instances"]:
            if entry["id"] == instance:
                return str(entry["state"])
    return None


async def test_api_requires_the_project_token(controlplane: ControlPlane) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(controlplane.url + "/healthz") as response:
            assert response.status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            async with session.get(controlplane.url + "/v1/status", headers=headers) as response:
                assert response.status == 401
                body = await response.json()
                assert body["error"] == "the request has no valid project token"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(controlplane.url + "/v1/sidecar/stream")
        assert refused.value.status == 401


async def test_client_turns_a_wrong_token_into_a_sentence(controlplane: ControlPlane) -> None:
    async with controlplane.client(token="not-the-token") as client:
        with pytest.raises(DevmeshError) as caught:
            await client.status()
    assert "no valid project token" in str(caught.value)
    assert "devmesh down" in str(caught.value)


async def test_a_bad_project_is_refused_with_every_problem_and_changes_nothing(
    controlplane: ControlPlane,
) -> None:
    bad = {"name": "demo", "services": {"web": {"comand": "x"}, "db": {"port": True}}}
    async with controlplane.client() as client:
        with pytest.raises(UsageError) as caught:
            await client.apply_project(bad)
        status = await client.status()
    assert "2 problems" in caught.value.message
    assert "did you mean 'command'?" in caught.value.message
    assert [s["name"] for s in status["services"]] == ["frontend", "catalog"]


async def test_snapshots_route_calls_and_telemetry_counts_them(controlplane: ControlPlane) -> None:
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        sidecar_process(controlplane, "frontend-1", "frontend", "default", None) as frontend,
        controlplane.client() as client,
    ):

        async def knows_both() -> bool:
            held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
            return held == {"catalog-v1-1", "catalog-v2-1"}

        await wait_until(knows_both, "the frontend's sidecar knows both catalog instances")
        bodies = [await call_through(frontend, "catalog") for _ in range(10)]
        assert sorted(bodies) == [(200, "catalog-v1")] * 5 + [(200, "catalog-v2")] * 5

        async def counted() -> bool:
            # Each sidecar reports on its own: the caller's records and the callees' apart.
            status = await client.status()
            served = sum(
                i["served"]["requests"]
                for s in status["services"]
                for i in s["instances"]
                if i["served"]
            )
            return any(e["requests"] == 10 for e in status["edges"]) and served == 10

        await wait_until(counted, "the control plane counted 10 requests, at both ends")
        status = await client.status()
        (edge,) = status["edges"]
        assert (edge["source"], edge["destination"], edge["errors"]) == ("frontend", "catalog", 0)
        assert instance_state(status, "catalog-v1-1") == "ready"
        assert instance_state(status, "frontend-1") == "ready", "no port: ready with its sidecar"
        served = {
            i["id"]: i["served"]["requests"]
            for s in status["services"]
            for i in s["instances"]
            if i["served"]
        }
        assert served == {"catalog-v1-1": 5, "catalog-v2-1": 5}
        acked = {p["instance"]: p["acked_version"] for p in status["proxies"]}
        assert set(acked.values()) == {status["snapshot_version"]}


async def test_only_ready_instances_get_traffic(controlplane: ControlPlane) -> None:
    """An instance whose app does not answer its health check is left out of the snapshot."""
    async with (
        app_server("catalog-v1") as v1_port,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", app_port=1),  # nothing
        sidecar_process(controlplane, "frontend-1", "frontend", "default", None) as frontend,
        controlplane.client() as client,
    ):

        async def knows_one() -> bool:
            held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
            return held is not None and len(held) == 1

        await wait_until(knows_one, "the frontend knows the one ready catalog instance")
        assert {(await call_through(frontend, "catalog"))[1] for _ in range(6)} == {"catalog-v1"}
        status = await client.status()
        assert instance_state(status, "catalog-v2-1") == "starting"
        detail = next(
            i["detail"]
            for s in status["services"]
            for i in s["instances"]
            if i["id"] == "catalog-v2-1"
        )
        assert "TCP connect to 127.0.0.1:1 failed" in detail


class KillableApp:
    """A stand-in for an instance that can be killed and started again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.BaseRequest) -> web.Response:
            return web.Response(text=self.name)

        self._runner = web.ServerRunner(web.Server(handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def kill(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def catalog_endpoints(plane: ControlPlane, client: ControlPlaneClient) -> set[str] | None:
    """The catalog instances the frontend's sidecar routes to (``None``: it does not hold
    the snapshot in force yet)."""
    return await endpoints_held(plane, client, "frontend-1", "catalog")


async def test_a_killed_app_is_reported_at_once_and_its_callers_fail_over(
    controlplane: ControlPlane,
) -> None:
    v1 = KillableApp("catalog-v1")
    await v1.start()
    try:
        async with (
            app_server("catalog-v2") as v2_port,
            wire_tap(controlplane) as tap,
            tapped_sidecar(tap, "catalog-v1-1", "catalog", "v1", v1.port),
            sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
            sidecar_process(controlplane, "frontend-1", "frontend", "default", None) as frontend,
            controlplane.client() as client,
        ):
            both = {"catalog-v1-1", "catalog-v2-1"}

            async def routed_to(expected: set[str]) -> bool:
                return await catalog_endpoints(controlplane, client) == expected

            await wait_until(lambda: routed_to(both), "the frontend knows both instances")
            since = len(tap.link("catalog-v1-1").said)

            await v1.kill()
            # The frontend still routes to catalog-v1-1: its requests go to catalog-v2-1.
            answers = [await call_through(frontend, "catalog") for _ in range(2)]
            assert answers == [(200, "catalog-v2")] * 2
            # catalog-v1-1's sidecar saw its app refuse a request: unhealthy at once, not
            # after three failed probes a second apart (2 s at the least). The link says
            # the health as it stands when it sends: a probe just after the request may
            # have put its own words on the same unhealthy state.
            change = await tap.said("catalog-v1-1", "health", since, within=1.5)
            assert change["state"] == "unhealthy"
            assert change["detail"] in (
                f"connection refused on 127.0.0.1:{v1.port} by a request",
                f"TCP connect to 127.0.0.1:{v1.port} failed: Connection refused",
            ), change

            async def reported(state: str) -> bool:
                return instance_state(await client.status(), "catalog-v1-1") == state

            await wait_until(lambda: reported("unhealthy"), "the control plane sees it unhealthy")
            await wait_until(
                lambda: routed_to({"catalog-v2-1"}),
                "the frontend no longer routes to catalog-v1-1",
            )

            await v1.start()  # the app is back on its port
            await wait_until(lambda: reported("ready"), "the probe finds the app ready again")
            await wait_until(lambda: routed_to(both), "the frontend routes to it again")
            answers = [await call_through(frontend, "catalog") for _ in range(4)]
            assert sorted(answers) == [(200, "catalog-v1")] * 2 + [(200, "catalog-v2")] * 2
    finally:
        await v1.kill()


async def test_split_is_applied_live_and_survives_a_restart(controlplane: ControlPlane) -> None:
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        wire_tap(controlplane) as tap,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        tapped_sidecar(tap, "frontend-1", "frontend", "default", None) as frontend,
    ):
        async with controlplane.client() as client:
            await client.set_split("catalog", {"v1": 0, "v2": 100})

            async def has_split() -> bool:
                snapshot = await snapshot_held(controlplane, client, "frontend-1")
                route = snapshot.routes.get("catalog") if snapshot is not None else None
                return (
                    route is not None
                    and route.split == {"v1": 0.0, "v2": 100.0}
                    and len(route.endpoints) == 2
                )

            await wait_until(has_split, "the frontend's sidecar has the split")
        assert {(await call_through(frontend, "catalog"))[1] for _ in range(20)} == {"catalog-v2"}
        version_before = controlplane.mesh.snapshot.version
        link = tap.link("frontend-1")
        hellos = link.hellos

        await controlplane.stop()
        await tap.wait(lambda: not link.connected, "the sidecar sees the drop")
        # The sidecar keeps routing on its last good snapshot while the control plane is away.
        assert {(await call_through(frontend, "catalog"))[1] for _ in range(10)} == {"catalog-v2"}

        await controlplane.start()
        assert controlplane.mesh.split_for("catalog") == {"v1": 0.0, "v2": 100.0}
        assert controlplane.mesh.snapshot.version >= version_before, "versions never go back"
        await tap.wait(
            lambda: link.connected and link.hellos > hellos, "the sidecar reconnects", within=15
        )
        async with controlplane.client() as client:
            await wait_until(
                lambda: all_synced(client, 3), "every sidecar re-registered and took the snapshot"
            )
            await client.clear_split("catalog")

            async def cleared() -> bool:
                snapshot = await snapshot_held(controlplane, client, "frontend-1")
                return snapshot is not None and snapshot.routes["catalog"].split is None

            await wait_until(cleared, "the split is cleared in the sidecar")
        seen = {(await call_through(frontend, "catalog"))[1] for _ in range(10)}
        assert seen == {"catalog-v1", "catalog-v2"}


async def test_a_sidecar_starts_from_its_last_snapshot_when_the_control_plane_is_away(
    controlplane: ControlPlane,
) -> None:
    async with (
        app_server("catalog-v1") as v1_port,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port),
    ):
        async with (
            sidecar_process(controlplane, "frontend-1", "frontend", "default", None),
            controlplane.client() as client,
        ):

            async def knows_catalog() -> bool:
                held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
                return held is not None and len(held) == 1

            await wait_until(knows_catalog, "the frontend knows catalog")
        port = controlplane.port
        await controlplane.stop()
        # A new frontend sidecar, with no control plane to ask: it uses what is on disk.
        async with sidecar_process(
            controlplane, "frontend-1", "frontend", "default", None, linked=False
        ) as restarted:
            assert not dialed_to(port), "nothing is linked to the control plane's port"
            assert await call_through(restarted, "catalog") == (200, "catalog-v1")


async def test_a_bad_split_is_refused_in_the_words_of_a_bad_devmesh_yaml(
    controlplane: ControlPlane,
) -> None:
    """A split sent at run time goes through devmesh.yaml's own validation: the same
    sentence, the same hint, and nothing changes."""
    weights = {"v1": 50, "v2": 40}
    in_config = dump_project(parse_project(PROJECT))
    in_config["policies"] = {"catalog": {"split": weights}}
    with pytest.raises(ConfigError) as config:
        parse_project(in_config)
    [problem] = config.value.problems
    async with controlplane.client() as client:
        await client.set_split("catalog", {"v1": 100, "v2": 0})
        state_before = controlplane.workspace.state_file.read_bytes()
        with pytest.raises(UsageError) as caught:
            await client.set_split("catalog", weights)
        assert caught.value.message == problem.message
        assert caught.value.message == (
            "the split weights of the policy for catalog add up to 90, not 100"
        )
        assert caught.value.hint == problem.hint
        assert controlplane.workspace.state_file.read_bytes() == state_before
        assert controlplane.mesh.split_for("catalog") == {"v1": 100.0, "v2": 0.0}


async def test_applying_a_project_drops_overrides_that_no_longer_fit(
    controlplane: ControlPlane,
) -> None:
    async with controlplane.client() as client:
        await client.set_split("catalog", {"v1": 50, "v2": 50})
        smaller = parse_project(PROJECT)
        data = dump_project(smaller)
        data["services"]["catalog"]["versions"].pop("v2")  # type: ignore[index]
        await client.apply_project(data)
        status = await client.status()
    catalog = next(s for s in status["services"] if s["name"] == "catalog")
    assert catalog["split"] is None


async def test_a_project_a_runtime_change_does_not_fit_is_refused_and_changes_nothing(
    controlplane: ControlPlane,
) -> None:
    """A fault matching calls from frontend does not fit a project without frontend: the
    project is refused whole, rather than adopted with a state every later change fails on."""
    async with controlplane.client() as client:
        await client.add_fault("catalog", {"abort": 503, "match": {"source": "frontend"}})
        state_before = controlplane.workspace.state_file.read_bytes()
        data = dump_project(parse_project(PROJECT))
        del data["services"]["frontend"]  # type: ignore[attr-defined]
        with pytest.raises(UsageError) as caught:
            await client.apply_project(data)
        assert caught.value.message == (
            "a change made at run time does not fit this project: a fault of the policy for "
            "catalog matches calls from 'frontend', which is not a service"
        )
        assert "devmesh fault ls" in str(caught.value.hint)
        assert controlplane.workspace.state_file.read_bytes() == state_before
        status = await client.status()
        assert [s["name"] for s in status["services"]] == ["frontend", "catalog"]
        await client.set_split("catalog", {"v1": 50, "v2": 50})  # later changes still work


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("172.18.0.5", True),
        ("172.19.0.5", False),
        ("192.168.1.20", False),
        ("", False),
        (None, False),
    ],
)
def test_only_loopback_and_the_project_network_may_connect(
    tmp_path: Path, remote: str | None, allowed: bool
) -> None:
    api = ControlPlaneAPI(
        Mesh(StateStore(tmp_path / "state.json")),
        "token",
        allowed_networks=[ipaddress.ip_network("172.18.0.0/16")],
    )
    assert api.peer_allowed(remote) is allowed


def test_a_state_file_it_cannot_use_stops_the_control_plane_with_a_sentence(
    tmp_path: Path,
) -> None:
    """What `devmesh up` shows from its log: the sentence and the hint, never a traceback."""
    workspace = Workspace(tmp_path)
    workspace.ensure()
    workspace.token(create=True)
    states = Path(__file__).parents[1] / "unit" / "devmesh" / "controlplane" / "states"
    shutil.copy(states / "bad_nan_expiry.json", workspace.state_file)
    result = subprocess.run(
        [sys.executable, "-m", "devmesh.controlplane", "--project-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert (
        f"cannot start: the control plane's state file {workspace.state_file} is not JSON "
        "devmesh wrote: `overrides.faults.f1.expires_at` is NaN, which is not a JSON number"
    ) in result.stderr
    assert f"move it aside (mv {workspace.state_file} " in result.stderr
    assert "Traceback" not in result.stderr
    assert not workspace.controlplane_file.exists()
