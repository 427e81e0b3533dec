"""The TUI under Textual's ``run_test()``, against a real control plane and real sidecars:
keys change the mesh, and the mesh's changes show."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from devmesh.workspace import write_json
from proxy.snapshot import Route
from tests.integration.meshkit import ControlPlane, snapshot_held
from tests.integration.test_telemetry import frontend_to_catalog, send
from tui.access import AccessScreen
from tui.app import MeshApp
from tui.editors import FaultScreen, SplitScreen
from tui.overview import StatusBar
from tui.source import LiveSource


async def until(
    pilot: Pilot[None],
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    within: float = 10.0,
) -> None:
    deadline = time.monotonic() + within
    while True:
        held = check()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting until {what}")
        await pilot.pause(0.05)


async def frontend_route(plane: ControlPlane, service: str) -> Route | None:
    """``service``'s route as the frontend's sidecar routes by it: the snapshot in force,
    once that sidecar acked it (``None`` before, or if it has no such route)."""
    async with plane.client() as client:
        snapshot = await snapshot_held(plane, client, "frontend-1")
    return None if snapshot is None else snapshot.routes.get(service)


def advertise(plane: ControlPlane) -> None:
    """Where the CLI (and the TUI) find the running control plane, as `up` writes it."""
    write_json(
        plane.workspace.controlplane_file,
        {"pid": os.getpid(), "port": plane.port, "url": plane.url},
    )


def rows(app: MeshApp, table: str) -> list[list[str]]:
    found = app.overview.query_one(table, DataTable)
    return [[str(cell) for cell in found.get_row_at(i)] for i in range(found.row_count)]


async def test_keys_add_a_fault_and_move_the_split_and_the_numbers_follow(
    controlplane: ControlPlane,
) -> None:
    advertise(controlplane)
    async with frontend_to_catalog(controlplane) as frontend:
        app = MeshApp(LiveSource(controlplane.workspace.project_dir), retry=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.connected, "the TUI is connected")
            assert [r[0] for r in rows(app, "#services")] == ["frontend", "catalog"]
            assert "live" in str(app.overview.query_one(StatusBar).render())

            await pilot.press("down")  # catalog
            assert app.selected_service() == "catalog"
            await pilot.press("f")
            assert isinstance(app.screen, FaultScreen)
            await pilot.press(*"250ms")  # the form opens on its first field, the delay
            assert app.screen.query_one("#field-delay", Input).value == "250ms"
            app.screen.query_one("#field-delay", Input).value = ""
            app.screen.query_one("#field-abort", Input).value = "503"
            app.screen.query_one("#field-percent", Input).value = "100"
            app.screen.query_one("#field-path", Input).focus()
            await pilot.press(*"/items", "enter")

            async def fault_in_force() -> bool:
                route = await frontend_route(controlplane, "catalog")
                return route is not None and bool(route.policy.faults)

            await until(pilot, fault_in_force, "the fault is in force in the frontend's sidecar")
            async with aiohttp.ClientSession() as session:
                assert (await send(session, frontend, "/items"))[0] == 503
                assert (await send(session, frontend, "/other"))[0] == 200
            fault_rows = app.screen.query_one("#faults", DataTable)
            await until(pilot, lambda: fault_rows.row_count == 1, "the form lists the new fault")
            await pilot.press("escape")
            await until(
                pilot,
                lambda: "⚡1" in rows(app, "#services")[1][-1],
                "the overview marks catalog's fault within the next refresh",
                within=3,
            )

            await pilot.press("s")
            assert isinstance(app.screen, SplitScreen)
            assert app.screen.weights == {"v1": 50, "v2": 50}
            await pilot.press("right", "right", "enter")
            await until(
                pilot,
                lambda: controlplane.mesh.split_for("catalog") == {"v1": 60, "v2": 40},
                "the split is applied",
            )
            await until(
                pilot,
                lambda: "v1 60 · v2 40" in rows(app, "#services")[1][1],
                "the overview shows the split within the next refresh",
                within=3,
            )


async def cli_json(plane: ControlPlane, *args: str) -> dict[str, object]:
    """``devmesh -C PROJECT ARGS`` run as a user would, against the running control plane."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "devmesh", "-C", str(plane.workspace.project_dir), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    found: dict[str, object] = json.loads(out)
    return found


async def test_the_editor_adds_a_bandwidth_and_a_hang_fault_as_the_cli_would(
    controlplane: ControlPlane,
) -> None:
    advertise(controlplane)
    async with frontend_to_catalog(controlplane):
        app = MeshApp(LiveSource(controlplane.workspace.project_dir), retry=0.2)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await until(pilot, lambda: app.connected, "the TUI is connected")
            await pilot.press("down", "f")  # catalog's faults
            screen = app.screen
            assert isinstance(screen, FaultScreen)
            listed = screen.query_one("#faults", DataTable)

            async def type_in(field: str, text: str) -> None:
                screen.query_one(f"#field-{field}", Input).focus()
                await pilot.press(*text)

            await type_in("bandwidth", "64kB")
            await type_in("for", "5m")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: listed.row_count == 1, "the form lists the bandwidth fault")
            await type_in("hang", "10s")
            await type_in("path", "/slow")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: listed.row_count == 2, "the form lists the hang fault")
            assert all(n.severity != "error" for n in app._notifications)

            async def both_in_force() -> bool:
                route = await frontend_route(controlplane, "catalog")
                return route is not None and len(route.policy.faults) == 2

            await until(pilot, both_in_force, "both faults are in force in the frontend's sidecar")
            faults = (await cli_json(controlplane, "fault", "ls", "--json"))["faults"]
            assert isinstance(faults, list)
            shown = sorted((f["service"], f["does"], f["matches"]) for f in faults)
            assert shown == [
                ("catalog", "bandwidth 64kB/s", "every request"),
                ("catalog", "hang 10s", "/slow*"),
            ]
            expiring = [f for f in faults if f["expires_in"] is not None]
            assert [f["does"] for f in expiring] == ["bandwidth 64kB/s"]


async def test_a_refused_change_is_a_notification_and_nothing_changes(
    controlplane: ControlPlane,
) -> None:
    advertise(controlplane)
    async with frontend_to_catalog(controlplane):
        app = MeshApp(LiveSource(controlplane.workspace.project_dir), retry=0.2)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await until(pilot, lambda: app.connected, "the TUI is connected")
            await pilot.press("down", "f")
            app.screen.query_one("#field-delay", Input).value = "banana"
            await pilot.press("enter")
            await until(pilot, lambda: bool(app._notifications), "a notification")
            (note,) = list(app._notifications)
            assert note.severity == "error"
            assert "banana" in note.message
            assert controlplane.mesh.faults() == []


async def test_the_control_plane_going_away_shows_and_clears(controlplane: ControlPlane) -> None:
    advertise(controlplane)
    app = MeshApp(LiveSource(controlplane.workspace.project_dir), retry=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.connected, "the TUI is connected")
        bar = app.overview.query_one(StatusBar)
        await controlplane.stop()
        await until(pilot, lambda: bar.has_class("disconnected"), "the bar says disconnected")
        assert "disconnected, retrying" in str(bar.render())
        await controlplane.start()  # the same port
        await until(pilot, lambda: app.connected, "the TUI is connected again", within=15)
        assert not bar.has_class("disconnected")


async def test_the_access_screen_locks_a_service_and_adds_a_rule_live(
    controlplane: ControlPlane,
) -> None:
    advertise(controlplane)
    async with frontend_to_catalog(controlplane) as frontend:
        app = MeshApp(LiveSource(controlplane.workspace.project_dir), retry=0.2)
        async with app.run_test(size=(160, 40), notifications=True) as pilot:
            await until(pilot, lambda: app.connected, "the TUI is connected")
            await pilot.press("down", "a")  # catalog
            assert isinstance(app.screen, AccessScreen)
            assert app.screen.query_one("#access-mtls", Input).value == "permissive"
            app.screen.query_one("#access-mtls", Input).value = "strict"
            app.screen.query_one("#access-from", Input).value = "frontend"
            app.screen.query_one("#access-paths", Input).value = "/admin/*"
            await pilot.press(*"deny", "enter")
            await until(
                pilot,
                lambda: (
                    controlplane.mesh.mtls_modes().get("catalog") == "strict"
                    and [r.rule.name for r in controlplane.mesh.rules()] == ["catalog-deny-1"]
                ),
                "the mode and the rule are applied",
            )

            async def strict() -> bool:
                route = await frontend_route(controlplane, "catalog")
                return route is not None and route.mtls == "strict"

            await until(
                pilot,
                strict,
                "the frontend's sidecar calls catalog over strict mTLS",
            )
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    assert (await send(session, frontend, "/items"))[0] == 200
                assert (await send(session, frontend, "/admin/x"))[0] == 403
            await until(
                pilot,
                lambda: any("🔒 locked 1 denied" in " ".join(r) for r in rows(app, "#edges")),
                "the edge shows locked, with its denial",
                within=5,
            )

            await pilot.press("a")
            app.screen.query_one("#access-audit", Input).value = "maybe"
            await pilot.press(*"allow", "enter")
            await until(pilot, lambda: bool(app._notifications), "a notification")
            assert "audit only must be yes or no" in list(app._notifications)[-1].message
            assert len(controlplane.mesh.rules()) == 1
