"""An instance keeps its place in routing while its control link drops and comes back,
and across a control-plane restart; it leaves routing when its sidecar says it stops, or
when it stays away past the grace period. The real control plane and real sidecars, on
real sockets. The sidecars are processes (``$DEVMESH_DATAPLANE`` picks which), black
boxes: a tap on the link between a sidecar and the control plane (``meshkit.WireTap``)
is the link to cut, and shows what each sidecar was told and said."""

from __future__ import annotations

import functools
from contextlib import AsyncExitStack

import aiohttp
import pytest

from devmesh.controlplane import mesh, sidecars
from proxy import appgate
from proxy.control import STREAM_PATH
from tests.integration.meshkit import (
    ControlPlane,
    TappedLink,
    Wire,
    all_synced,
    app_server,
    call_through,
    endpoints_held,
    sidecar_process,
    tapped_sidecar,
    wait_until,
    wire_tap,
)


def catalog_endpoints(snapshots: list[Wire]) -> list[set[str]]:
    """The set of catalog endpoints in each of ``snapshots``, in order."""
    seen = []
    for snapshot in snapshots:
        route = snapshot.get("routes", {}).get("catalog")
        seen.append({e["instance"] for e in route["endpoints"]} if route is not None else set())
    return seen


BOTH = {"catalog-v1-1", "catalog-v2-1"}


def dialed_again(link: TappedLink, hellos: int) -> bool:
    """The sidecar of ``link`` is linked, and said at least ``hellos`` hellos so far."""
    return link.connected and link.hellos >= hellos


async def test_a_link_that_drops_and_comes_back_changes_no_routing(
    controlplane: ControlPlane,
) -> None:
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        wire_tap(controlplane) as tap,
        tapped_sidecar(tap, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        tapped_sidecar(tap, "frontend-1", "frontend", "default", None) as frontend,
        controlplane.client() as client,
    ):

        async def routed_to(expected: set[str]) -> bool:
            return await endpoints_held(controlplane, client, "frontend-1", "catalog") == expected

        await wait_until(lambda: routed_to(BOTH), "the frontend knows both instances")
        v1, seen_from = tap.link("catalog-v1-1"), len(tap.link("frontend-1").told)
        for dials in range(v1.hellos + 1, v1.hellos + 4):
            tap.cut("catalog-v1-1")
            await tap.wait(lambda: not v1.connected, "the link to drop")
            await tap.wait(functools.partial(dialed_again, v1, dials), "the sidecar to dial again")
        await wait_until(lambda: "catalog-v1-1" in controlplane.mesh.proxies, "it said hello again")
        assert await call_through(frontend, "catalog") == (200, "catalog-v1")
        seen = catalog_endpoints(tap.link("frontend-1").snapshots(seen_from))
        assert all(endpoints == BOTH for endpoints in seen), seen


async def test_an_instance_away_past_the_grace_period_leaves_routing(
    controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh, "DISCONNECT_GRACE", 1.0)
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        wire_tap(controlplane) as tap,
        tapped_sidecar(tap, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        sidecar_process(controlplane, "frontend-1", "frontend", "default", None),
        controlplane.client() as client,
    ):

        async def routed() -> set[str] | None:
            return await endpoints_held(controlplane, client, "frontend-1", "catalog")

        async def routed_to(expected: set[str]) -> bool:
            return await routed() == expected

        await wait_until(lambda: routed_to(BOTH), "the frontend knows both instances")
        await tap.stop()  # it cannot dial again

        async def shown_disconnected() -> bool:
            status = await client.status()
            entry = next(
                i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"
            )
            return bool(entry["state"] == "disconnected" and "still routed to" in entry["detail"])

        await wait_until(shown_disconnected, "status to show it disconnected, still routed to")
        assert await routed() == BOTH, "within the grace period it keeps its place"
        await wait_until(lambda: routed_to({"catalog-v2-1"}), "it to leave routing after the grace")


async def test_a_sidecar_that_stops_leaves_routing_at_once(
    controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mesh, "DISCONNECT_GRACE", 600.0)  # only its word can take it out
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        sidecar_process(controlplane, "frontend-1", "frontend", "default", None),
        controlplane.client() as client,
    ):

        async def routed_to(expected: set[str]) -> bool:
            held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
            return held == expected

        async with sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port):
            await wait_until(lambda: routed_to(BOTH), "the frontend knows both")
        await wait_until(lambda: routed_to({"catalog-v2-1"}), "the stopped one to leave", within=3)


async def test_a_restarted_control_plane_keeps_every_healthy_instance_in_routing(
    controlplane: ControlPlane,
) -> None:
    async with (
        app_server("catalog-v1") as v1_port,
        app_server("catalog-v2") as v2_port,
        wire_tap(controlplane) as tap,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", v1_port),
        sidecar_process(controlplane, "catalog-v2-1", "catalog", "v2", v2_port),
        tapped_sidecar(tap, "frontend-1", "frontend", "default", None) as frontend,
    ):
        async with controlplane.client() as client:

            async def knows_both() -> bool:
                return await endpoints_held(controlplane, client, "frontend-1", "catalog") == BOTH

            await wait_until(knows_both, "the frontend knows both instances")
        link = tap.link("frontend-1")
        seen_from = len(link.told)
        await controlplane.stop()
        await tap.wait(lambda: not link.connected, "the link drops")
        before = len(link.snapshots(seen_from))
        await controlplane.start()
        # What it publishes before any sidecar is back: the routes it kept.
        first = {e.instance for e in controlplane.mesh.snapshot.routes["catalog"].endpoints}
        assert first == BOTH
        async with controlplane.client() as client:
            await wait_until(
                lambda: all_synced(client, 3), "every sidecar said hello and took the snapshot"
            )
        seen = catalog_endpoints(link.snapshots(seen_from))
        assert len(seen) > before, "the frontend was sent a snapshot after the restart"
        assert {(await call_through(frontend, "catalog"))[1] for _ in range(4)} == {
            "catalog-v1",
            "catalog-v2",
        }
        assert all(endpoints == BOTH for endpoints in seen), seen


async def test_a_silent_sidecar_is_pinged_and_one_that_never_answers_is_let_go(
    controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecars, "HEARTBEAT", 0.4)
    hello = {
        "type": "hello",
        "node": {"service": "catalog", "version": "v1", "instance": "catalog-v1-1",
                 "role": "sidecar", "inbound": "127.0.0.1:1"},
        "health": {"state": "ready", "detail": "fine"},
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {controlplane.workspace.token()}"}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(controlplane.url + STREAM_PATH, headers=headers, autoping=False) as ws,
    ):
        await ws.send_json(hello)
        await wait_until(
            lambda: "catalog-v1-1" in controlplane.mesh.proxies, "the hello to be taken"
        )
        kinds = []
        async for message in ws:  # a stand-in that never answers a ping
            kinds.append(message.type)
        assert aiohttp.WSMsgType.PING in kinds, "it was pinged first"
    await wait_until(lambda: "catalog-v1-1" not in controlplane.mesh.proxies, "it is let go")
    assert "catalog-v1-1" in controlplane.mesh.absent, "its place is kept for the grace period"


async def test_a_hold_that_is_never_released_ends_by_itself_on_both_sides(
    controlplane: ControlPlane,
) -> None:
    """The sidecar's hold ends by itself after ``HOLD_LIMIT`` (60 s, the contract's figure;
    a process's own, so this test waits that long)."""
    async with AsyncExitStack() as app:
        v1_port = await app.enter_async_context(app_server("catalog-v1"))
        async with (
            wire_tap(controlplane) as tap,
            tapped_sidecar(tap, "catalog-v1-1", "catalog", "v1", v1_port),
            sidecar_process(controlplane, "frontend-1", "frontend", "default", None) as frontend,
            controlplane.client() as client,
        ):

            async def routed() -> bool:
                held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
                return held == {"catalog-v1-1"}

            await wait_until(routed, "routed")
            since = len(tap.link("catalog-v1-1").said)
            await client.hold("catalog-v1-1")  # and the restart that should release it never ends
            await tap.said("catalog-v1-1", "held", since)
            proxy = controlplane.mesh.proxies["catalog-v1-1"]
            assert proxy.held
            await tap.said(
                "catalog-v1-1", "released", since, within=appgate.HOLD_LIMIT + 10.0
            )  # no release was sent: it ended by itself
            await wait_until(lambda: not proxy.held, "the control plane to hear of it")
            assert await call_through(frontend, "catalog") == (200, "catalog-v1")
            await app.aclose()  # the app goes away: its health is reported again
            await wait_until(lambda: proxy.health == "unhealthy", "its health to be reported again")
