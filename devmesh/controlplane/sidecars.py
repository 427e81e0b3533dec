"""The control plane's end of each sidecar's link (``proxy/control.py`` is the other end).

One WebSocket per sidecar (or gateway), on ``STREAM_PATH``; the messages both
ways are listed in ``proxy.control``. Here: the hello that makes a ``Proxy`` of
the mesh, the snapshot pushed to every link when the routes change (acked or
nacked), the identity issued and renewed over the link, telemetry handed to the
control plane's sink, breaker reports turned into events, a sidecar leaving,
and the hold around an app's restart (hold/held, release/released).

The mesh model (``mesh.Mesh``) decides; this module only carries its decisions
to the sidecars and their reports to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from devmesh.controlplane.identities import Identities
from devmesh.controlplane.mesh import Mesh, Proxy
from devmesh.controlplane.roster import HEALTH_STATES
from devmesh.controlplane.streams import Events
from devmesh.errors import DevmeshError
from devmesh.strictjson import loads as strict_loads
from proxy.appgate import DRAIN_LIMIT
from proxy.snapshot import Snapshot, snapshot_to_wire

log = logging.getLogger("devmesh.controlplane")

HELLO_TIMEOUT = 10.0
"""How long a sidecar that opened its link has to say hello."""
HEARTBEAT = 10.0
"""A sidecar the control plane has heard nothing from for this long is pinged; one that
does not answer within half of it more is gone (aiohttp's heartbeat: any frame counts)."""
HOLD_TIMEOUT = DRAIN_LIMIT + 5.0
"""How long a sidecar may take to answer a hold (it drains for at most ``DRAIN_LIMIT``)."""

Telemetry = Callable[[list[object], int], None]
"""Where a sidecar's request records go: ``(records, dropped)``."""


class NotHoldable(DevmeshError):
    """The instance's calls cannot be held now (its sidecar is not connected, or it is held
    already); answered 409."""


class SidecarLinks:
    """Every connected sidecar's link, by instance."""

    def __init__(
        self,
        mesh: Mesh,
        events: Events,
        telemetry: Telemetry,
        identities: Identities | None = None,
    ) -> None:
        """``identities``: where sidecars get theirs (without it, they get none)."""
        self.mesh = mesh
        self.events = events
        self.identities = identities
        self._telemetry = telemetry
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._held: dict[str, asyncio.Future[int]] = {}
        """Holds asked of sidecars and not answered yet, by instance."""

    # -- the stream --------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """One sidecar's link, from its hello until it closes."""
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
        await ws.prepare(request)
        try:
            hello = await ws.receive_json(timeout=HELLO_TIMEOUT)
            proxy = proxy_from_hello(hello)
        except (TimeoutError, ValueError, TypeError, KeyError) as exc:
            log.warning("closing a sidecar stream with a bad hello: %s", exc)
            await ws.close(code=4000, message=b"bad hello")
            return ws
        self.mesh.connect(proxy)
        self._sockets[proxy.instance] = ws
        log.info("%s %s connected (%s)", proxy.role, proxy.instance, proxy.inbound)
        try:
            # The identity first: a snapshot naming strict destinations finds it in place.
            await self._send_identity(proxy, ws)
            # A proxy that says hello ready may change the routes: then every proxy (this
            # one too) gets the new snapshot; else this one gets the one in force.
            if not await self.publish():
                await self._send(ws, self.mesh.snapshot)
            async for message in ws:
                if message.type == WSMsgType.TEXT and self._handle(proxy, message.data):
                    await self.publish()
        finally:
            self.mesh.disconnect(proxy)
            if self._sockets.get(proxy.instance) is ws:
                del self._sockets[proxy.instance]
                waiter = self._held.get(proxy.instance)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ConnectionError("its link to the control plane closed"))
            log.info("%s %s disconnected", proxy.role, proxy.instance)
            await self.publish()
        return ws

    def _handle(self, proxy: Proxy, data: str) -> bool:
        """Apply one message from a proxy; True if the snapshot may need rebuilding."""
        try:
            message = strict_loads(data)
        except ValueError:  # not JSON, or a number that is none (NaN): the whole message
            return False
        if not isinstance(message, dict):
            return False
        kind = message.get("type")
        if kind == "telemetry":
            records = message.get("records")
            dropped = message.get("dropped", 0)
            self._telemetry(
                records if isinstance(records, list) else [],
                dropped if isinstance(dropped, int) else 0,
            )
        elif kind == "health":
            state = message.get("state")
            if state in HEALTH_STATES:
                changed: bool = state != proxy.health
                proxy.health, proxy.detail = state, str(message.get("detail", ""))
                return changed
        elif kind == "breakers":
            breakers = message.get("breakers")
            if isinstance(breakers, dict):
                reported = {
                    str(k): v for k, v in breakers.items() if isinstance(v, dict) and "state" in v
                }
                for event in self.mesh.report_breakers(proxy, reported):
                    self.events.publish(event)
        elif kind == "released":
            self.mesh.release(proxy.instance)
            return True
        elif kind == "leaving":
            self.mesh.leave(proxy)
            return True
        elif kind == "held":
            waiter = self._held.get(proxy.instance)
            in_flight = message.get("in_flight")
            if waiter is not None and not waiter.done():
                waiter.set_result(in_flight if isinstance(in_flight, int) else 0)
        elif kind == "identity-ack":
            fingerprint = message.get("fingerprint")
            if self.identities is not None and isinstance(fingerprint, str):
                self.identities.installed(proxy.instance, fingerprint)
        elif kind == "ack":
            proxy.acked_version, proxy.rejected = message.get("version"), None
        elif kind == "nack":
            proxy.rejected = str(message.get("error"))
            log.warning(
                "%s rejected snapshot %s: %s",
                proxy.instance,
                message.get("version"),
                proxy.rejected,
            )
        return False

    # -- snapshots -----------------------------------------------------------------

    async def publish(self) -> bool:
        """Send a new snapshot to every connected proxy, if the mesh changed; True if so."""
        snapshot = self.mesh.rebuild()
        if snapshot is None:
            return False
        self.events.publish({"type": "config", "ts": time.time(), "version": snapshot.version})
        await asyncio.gather(*(self._send(ws, snapshot) for ws in list(self._sockets.values())))
        return True

    async def _send(self, ws: web.WebSocketResponse, snapshot: Snapshot) -> None:
        if ws.closed:
            return
        try:
            await ws.send_json({"type": "snapshot", "snapshot": snapshot_to_wire(snapshot)})
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not send snapshot %d: %s", snapshot.version, exc)

    # -- identities ----------------------------------------------------------------

    async def _send_identity(self, proxy: Proxy, ws: web.WebSocketResponse) -> None:
        """Issue ``proxy`` an identity of its service and send it (key included)."""
        project = self.mesh.project
        if self.identities is None or project is None or ws.closed:
            return
        try:
            issued = await asyncio.to_thread(
                self.identities.issue, project.name, proxy.service, proxy.instance
            )
        except DevmeshError as exc:
            log.error("cannot issue %s an identity: %s", proxy.instance, exc.message)
            return
        try:
            await ws.send_json({"type": "identity", **issued.identity.to_wire()})
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not send %s its identity: %s", proxy.instance, exc)

    async def renew_identities(self) -> None:
        """Send a new identity to each connected sidecar whose own is half through its life."""
        if self.identities is None:
            return
        for issued in self.identities.due(set(self._sockets)):
            proxy = self.mesh.proxies.get(issued.instance)
            ws = self._sockets.get(issued.instance)
            if proxy is not None and ws is not None:
                await self._send_identity(proxy, ws)

    # -- holds around an app's restart --------------------------------------------

    async def hold(self, instance: str) -> int:
        """Have the instance's sidecar hold its calls while its app restarts
        (``proxy.appgate``), its version's other instances taking them meanwhile; the calls
        still in flight at its app when it answered (it drains them first).
        ``NotHoldable`` if it cannot be held now, ``DevmeshError`` if it did not hold (then
        the hold is released)."""
        proxy, ws = self.mesh.proxies.get(instance), self._sockets.get(instance)
        if proxy is None or ws is None:
            raise NotHoldable(
                f"the sidecar of {instance} is not connected to the control plane",
                "see `devmesh status`; its calls cannot be held for a restart",
            )
        if instance in self._held:
            raise NotHoldable(f"{instance} is being held already", "wait for that restart to end")
        waiter = self._held[instance] = asyncio.get_running_loop().create_future()
        self.mesh.hold(proxy)
        await self.publish()
        try:
            await ws.send_json({"type": "hold"})
            return await asyncio.wait_for(waiter, HOLD_TIMEOUT)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            await self.release(instance)
            raise DevmeshError(
                f"the sidecar of {instance} did not hold its calls: {exc or type(exc).__name__}"
            ) from None
        finally:
            self._held.pop(instance, None)

    async def release(self, instance: str) -> None:
        """Let the calls held for the instance's restart go on, and route to it again."""
        ws = self._sockets.get(instance)
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "release"})
        self.mesh.release(instance)
        await self.publish()

    async def close(self) -> None:
        """Close every link (the control plane shuts down)."""
        for ws in list(self._sockets.values()):
            await ws.close(code=1001, message=b"control plane shutting down")


def proxy_from_hello(hello: Any) -> Proxy:
    """The proxy a hello describes; ``ValueError``, ``TypeError`` or ``KeyError`` if it is
    not a hello."""
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise ValueError("first message must be a hello")
    node = hello["node"]
    if not isinstance(node, dict):
        raise TypeError("hello.node must be an object")
    inbound = node.get("inbound")
    proxy = Proxy(
        service=str(node["service"]),
        version=str(node["version"]),
        instance=str(node["instance"]),
        role=str(node.get("role", "sidecar")),
        inbound=str(inbound) if inbound else None,
        health_check=str(node.get("health_check", "")),
    )
    # Its health as it stands: a sidecar dialling again keeps its place in routing.
    health = hello.get("health")
    if isinstance(health, dict) and health.get("state") in HEALTH_STATES:
        proxy.health, proxy.detail = health["state"], str(health.get("detail", ""))
    return proxy
