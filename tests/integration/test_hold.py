"""Holding an instance's calls while its app restarts, through the real control plane and
real sidecars: the call already with the app finishes, new ones wait at its sidecar and go
on to the app started again on the same port after the release; none fails."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from aiohttp import web

from devmesh.client import ControlPlaneClient
from tests.integration.meshkit import ControlPlane, call_through, serve, sidecar, wait_until


async def state_of(client: ControlPlaneClient) -> str:
    status = await client.status()
    (entry,) = [i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"]
    return str(entry["state"])


async def test_a_held_instance_s_calls_wait_for_its_new_app_and_none_fails(
    controlplane: ControlPlane,
) -> None:
    finish = asyncio.Event()

    async def old_app(request: web.BaseRequest) -> web.Response:
        await finish.wait()  # the call that is with the app when the hold comes
        return web.Response(text="old app")

    async def new_app(request: web.BaseRequest) -> web.Response:
        return web.Response(text="new app")

    async with AsyncExitStack() as old, AsyncExitStack() as stack:
        port = await old.enter_async_context(serve(old_app))
        catalog = await stack.enter_async_context(
            sidecar(controlplane, "catalog-v1-1", "catalog", "v1", port)
        )
        frontend = await stack.enter_async_context(
            sidecar(controlplane, "frontend-1", "frontend", "default", None)
        )
        client = await stack.enter_async_context(controlplane.client())
        gate = catalog.sidecar.app_gate

        def routed() -> int:
            route = frontend.router.snapshot.routes.get("catalog")
            return len(route.endpoints) if route is not None else 0

        await wait_until(lambda: routed() == 1, "the frontend knows catalog")
        with_the_app = asyncio.create_task(call_through(frontend, "catalog"))
        await wait_until(lambda: gate.in_flight == 1, "a call with the app")
        holding = asyncio.create_task(client.hold("catalog-v1-1"))
        await wait_until(lambda: gate.held, "the hold to reach the sidecar")
        assert not holding.done(), "the hold waits for the call with the app"
        held = asyncio.create_task(call_through(frontend, "catalog"))
        finish.set()
        assert await holding == 0
        assert await with_the_app == (200, "old app")

        status = await client.status()
        (entry,) = [
            i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"
        ]
        assert entry["state"] == "restarting"
        assert routed() == 1, "the only instance of its version stays routed: its calls wait"

        await old.aclose()  # the app stops...
        await asyncio.sleep(0.2)  # a while, for something that must not happen
        assert not held.done(), "a held call is not answered, nor failed, while it is away"
        await stack.enter_async_context(serve(new_app, port))  # ...and starts again
        await client.release("catalog-v1-1")
        assert await held == (200, "new app")
        assert not gate.held
        status = await client.status()
        (entry,) = [
            i for s in status["services"] for i in s["instances"] if i["id"] == "catalog-v1-1"
        ]
        assert entry["state"] == "ready"
