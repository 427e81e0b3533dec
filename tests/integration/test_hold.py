"""Holding an instance's calls while its app restarts, through the real control plane and
real sidecars (processes, black boxes: what they hold and route by is read from their link,
through a ``meshkit.WireTap``, and from the control plane): the call already with the app
finishes, new ones wait at its sidecar and go on to the app started again on the same port
after the release; none fails."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from aiohttp import web

from devmesh.client import ControlPlaneClient
from tests.integration.meshkit import (
    ControlPlane,
    call_through,
    endpoints_held,
    serve,
    sidecar_process,
    tapped_sidecar,
    wait_until,
    wire_tap,
)


async def state_of(client: ControlPlaneClient) -> str:
    status = await client.status()
    (entry,) = [i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"]
    return str(entry["state"])


async def test_a_held_instance_s_calls_wait_for_its_new_app_and_none_fails(
    controlplane: ControlPlane,
) -> None:
    finish = asyncio.Event()
    arrived = asyncio.Event()

    async def old_app(request: web.BaseRequest) -> web.Response:
        arrived.set()
        await finish.wait()  # the call that is with the app when the hold comes
        return web.Response(text="old app")

    async def new_app(request: web.BaseRequest) -> web.Response:
        return web.Response(text="new app")

    async with AsyncExitStack() as old, AsyncExitStack() as stack:
        port = await old.enter_async_context(serve(old_app))
        tap = await stack.enter_async_context(wire_tap(controlplane))
        await stack.enter_async_context(tapped_sidecar(tap, "catalog-v1-1", "catalog", "v1", port))
        frontend = await stack.enter_async_context(
            sidecar_process(controlplane, "frontend-1", "frontend", "default", None)
        )
        client = await stack.enter_async_context(controlplane.client())

        async def routed() -> int:
            held = await endpoints_held(controlplane, client, "frontend-1", "catalog")
            return len(held) if held is not None else 0

        async def routed_once() -> bool:
            return await routed() == 1

        await wait_until(routed_once, "the frontend knows catalog")
        link = tap.link("catalog-v1-1")
        with_the_app = asyncio.create_task(call_through(frontend, "catalog"))
        await asyncio.wait_for(arrived.wait(), 10)  # a call with the app
        since, told = len(link.said), len(link.told)
        holding = asyncio.create_task(client.hold("catalog-v1-1"))
        await tap.wait(
            lambda: any(m.get("type") == "hold" for m in link.told[told:]), "the hold to be sent"
        )
        await tap.barrier("catalog-v1-1")  # the hold reached the sidecar, which took it
        assert not holding.done(), "the hold waits for the call with the app"
        assert not link.of_type("held", since), "no held while the call is with the app"
        held = asyncio.create_task(call_through(frontend, "catalog"))
        finish.set()
        assert await holding == 0
        assert (await tap.said("catalog-v1-1", "held", since))["in_flight"] == 0
        assert await with_the_app == (200, "old app")

        status = await client.status()
        (entry,) = [
            i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"
        ]
        assert entry["state"] == "restarting"
        assert await routed() == 1, "the only instance of its version stays routed: its calls wait"

        await old.aclose()  # the app stops...
        await asyncio.sleep(0.2)  # a while, for something that must not happen
        assert not held.done(), "a held call is not answered, nor failed, while it is away"
        await stack.enter_async_context(serve(new_app, port))  # ...and starts again
        await client.release("catalog-v1-1")
        assert await held == (200, "new app")
        await tap.said("catalog-v1-1", "released", since)
        status = await client.status()
        (entry,) = [
            i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"
        ]
        assert entry["state"] == "ready"
