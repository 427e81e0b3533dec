"""The control plane's HTTP surface: the API for the CLI/TUI and the sidecar stream.

Every route but ``/healthz`` needs ``Authorization: Bearer <project token>``.
Errors are JSON: ``{"error": "...", "hint": "...", "problems": [...]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from devmesh.config import dump_project
from devmesh.config.dump import dump_policy
from devmesh.config.model import Project
from devmesh.controlplane.mesh import Mesh, Proxy, UnknownService
from devmesh.controlplane.overrides import UnknownFault
from devmesh.errors import ConfigError, DevmeshError
from proxy.control import STREAM_PATH
from proxy.snapshot import Snapshot, snapshot_to_wire

log = logging.getLogger("devmesh.controlplane")

HELLO_TIMEOUT = 10.0
EXPIRY_CHECK = 0.25
MESH_KEY = web.AppKey("mesh", Mesh)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ControlPlaneAPI:
    def __init__(self, mesh: Mesh, token: str, allowed_networks: Sequence[Network] = ()) -> None:
        self.mesh = mesh
        self._token = token.encode()
        self._allowed = tuple(allowed_networks)
        self._sockets: dict[str, web.WebSocketResponse] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._peers, self._errors, self._auth])
        app[MESH_KEY] = self.mesh
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/project", self.get_project)
        app.router.add_put("/v1/project", self.put_project)
        app.router.add_put("/v1/services/{service}/split", self.put_split)
        app.router.add_delete("/v1/services/{service}/split", self.delete_split)
        app.router.add_get("/v1/services/{service}/policy", self.get_policy)
        app.router.add_put("/v1/services/{service}/policy", self.put_policy)
        app.router.add_delete("/v1/services/{service}/policy", self.delete_policy)
        app.router.add_get("/v1/faults", self.get_faults)
        app.router.add_post("/v1/faults", self.post_fault)
        app.router.add_delete("/v1/faults", self.delete_faults)
        app.router.add_delete("/v1/faults/{fault}", self.delete_fault)
        app.cleanup_ctx.append(self._expiry)
        app.router.add_get(STREAM_PATH, self.sidecar_stream)
        app.on_shutdown.append(self._close_sockets)
        return app

    # -- middleware --------------------------------------------------------------

    @web.middleware
    async def _peers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Only this machine, and the project network's containers, may talk to us at all."""
        if not self.peer_allowed(request.remote):
            log.warning("refused a request from %s, outside the mesh", request.remote)
            return _error(403, "this control plane only answers its own machine and mesh")
        response: web.StreamResponse = await handler(request)
        return response

    def peer_allowed(self, remote: str | None) -> bool:
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if address.is_loopback:
            return True
        return any(address in network for network in self._allowed)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/healthz":
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self._token):
                return _error(
                    401,
                    "the request has no valid project token",
                    "send Authorization: Bearer <token>, the token in .devmesh/token",
                )
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ConfigError as exc:
            if request.path == "/v1/project":
                return _error(400, exc.message, exc.hint, problems=[str(p) for p in exc.problems])
            # A runtime change: its problems in its own words, no file to point at.
            first = exc.problems[0]
            return _error(
                400,
                "; ".join(p.message for p in exc.problems),
                first.hint,
                problems=[f"{p.path}: {p.message}" for p in exc.problems],
            )
        except (UnknownService, UnknownFault) as exc:
            return _error(404, exc.message, exc.hint)
        except DevmeshError as exc:
            return _error(400, exc.message, exc.hint)

    # -- API -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        project = self.mesh.project
        return web.json_response({"status": "ok", "project": project.name if project else None})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.mesh.status())

    async def get_project(self, request: web.Request) -> web.Response:
        project = self.mesh.project
        return web.json_response(dump_project(project) if project else None)

    async def put_project(self, request: web.Request) -> web.Response:
        project: Project = self.mesh.apply_project(await _json_body(request))
        await self.publish()
        return web.json_response({"project": project.name, "services": list(project.services)})

    async def put_split(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        weights = body.get("weights") if isinstance(body, dict) else None
        if not isinstance(weights, dict) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in weights.values()
        ):
            raise DevmeshError('the body must be {"weights": {"<version>": <number>, ...}}')
        service = request.match_info["service"]
        self.mesh.set_split(service, weights)
        await self.publish()
        return web.json_response({"service": service, "split": self.mesh.split_for(service)})

    async def delete_split(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        self.mesh.clear_split(service)
        await self.publish()
        return web.json_response({"service": service, "split": self.mesh.split_for(service)})

    # -- policy and faults ---------------------------------------------------------

    def _policy_reply(self, service: str) -> web.Response:
        return web.json_response(
            {
                "service": service,
                "policy": dump_policy(self.mesh.policy(service)),
                "overrides": self.mesh.policy_overrides(service),
            }
        )

    async def get_policy(self, request: web.Request) -> web.Response:
        return self._policy_reply(request.match_info["service"])

    async def put_policy(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        settings = body.get("settings") if isinstance(body, dict) else None
        if not isinstance(settings, dict):
            raise DevmeshError('the body must be {"settings": {"timeout": "2s", ...}}')
        service = request.match_info["service"]
        self.mesh.set_policy(service, settings)
        await self.publish()
        return self._policy_reply(service)

    async def delete_policy(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        self.mesh.clear_policy(service)
        await self.publish()
        return self._policy_reply(service)

    async def get_faults(self, request: web.Request) -> web.Response:
        now = time.time()
        return web.json_response({"faults": [f.to_json(now) for f in self.mesh.faults()]})

    async def post_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("service"), str):
            raise DevmeshError('the body must be {"service": "...", "fault": {...}, "for": null}')
        fault, lasts = body.get("fault"), body.get("for")
        if not isinstance(fault, dict):
            raise DevmeshError("the fault must be an object, in devmesh.yaml's shape")
        if lasts is not None and (not isinstance(lasts, int | float) or lasts <= 0):
            raise DevmeshError("`for` must be a number of seconds above 0")
        added = self.mesh.add_fault(body["service"], fault, lasts)
        await self.publish()
        return web.json_response({"fault": added.to_json(time.time())}, status=201)

    async def delete_fault(self, request: web.Request) -> web.Response:
        removed = self.mesh.remove_fault(request.match_info["fault"])
        await self.publish()
        return web.json_response({"removed": [removed.to_json(time.time())]})

    async def delete_faults(self, request: web.Request) -> web.Response:
        removed = self.mesh.reset_faults(request.query.get("service"))
        await self.publish()
        return web.json_response({"removed": removed})

    async def _expiry(self, app: web.Application) -> AsyncIterator[None]:
        """Time-boxed faults remove themselves: checked a few times a second."""

        async def run() -> None:
            while True:
                await asyncio.sleep(EXPIRY_CHECK)
                if self.mesh.expire_faults():
                    await self.publish()

        task = asyncio.create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- sidecar stream ------------------------------------------------------------

    async def sidecar_stream(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=10.0)
        await ws.prepare(request)
        try:
            hello = await ws.receive_json(timeout=HELLO_TIMEOUT)
            proxy = _proxy_from_hello(hello)
        except (TimeoutError, ValueError, TypeError, KeyError) as exc:
            log.warning("closing a sidecar stream with a bad hello: %s", exc)
            await ws.close(code=4000, message=b"bad hello")
            return ws
        self.mesh.connect(proxy)
        self._sockets[proxy.instance] = ws
        log.info("%s %s connected (%s)", proxy.role, proxy.instance, proxy.inbound)
        try:
            await self._send(ws, self.mesh.snapshot)
            async for message in ws:
                if message.type == WSMsgType.TEXT and await self._handle(proxy, message.data):
                    await self.publish()
        finally:
            self.mesh.disconnect(proxy)
            if self._sockets.get(proxy.instance) is ws:
                del self._sockets[proxy.instance]
            log.info("%s %s disconnected", proxy.role, proxy.instance)
            await self.publish()
        return ws

    async def _handle(self, proxy: Proxy, data: str) -> bool:
        """Apply one message from a proxy; True if the snapshot may need rebuilding."""
        try:
            message = json.loads(data)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        kind = message.get("type")
        if kind == "telemetry":
            records = message.get("records")
            dropped = message.get("dropped", 0)
            self.mesh.metrics.ingest(
                records if isinstance(records, list) else [],
                dropped if isinstance(dropped, int) else 0,
            )
        elif kind == "health":
            state = message.get("state")
            if state in ("starting", "ready", "unhealthy"):
                changed: bool = state != proxy.health
                proxy.health, proxy.detail = state, str(message.get("detail", ""))
                return changed
        elif kind == "breakers":
            breakers = message.get("breakers")
            if isinstance(breakers, dict):
                proxy.breakers = {
                    str(k): v for k, v in breakers.items() if isinstance(v, dict) and "state" in v
                }
                proxy.breakers_at = time.time()
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

    async def publish(self) -> None:
        """Send a new snapshot to every connected proxy, if the mesh changed."""
        snapshot = self.mesh.rebuild()
        if snapshot is None:
            return
        await asyncio.gather(*(self._send(ws, snapshot) for ws in list(self._sockets.values())))

    async def _send(self, ws: web.WebSocketResponse, snapshot: Snapshot) -> None:
        if ws.closed:
            return
        try:
            await ws.send_json({"type": "snapshot", "snapshot": snapshot_to_wire(snapshot)})
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not send snapshot %d: %s", snapshot.version, exc)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets.values()):
            await ws.close(code=1001, message=b"control plane shutting down")


def _proxy_from_hello(hello: Any) -> Proxy:
    if not isinstance(hello, dict) or hello.get("type") != "hello":
        raise ValueError("first message must be a hello")
    node = hello["node"]
    if not isinstance(node, dict):
        raise TypeError("hello.node must be an object")
    inbound = node.get("inbound")
    return Proxy(
        service=str(node["service"]),
        version=str(node["version"]),
        instance=str(node["instance"]),
        role=str(node.get("role", "sidecar")),
        inbound=str(inbound) if inbound else None,
        health_check=str(node.get("health_check", "")),
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise DevmeshError(f"the request body is not valid JSON: {exc}") from exc


def _error(
    status: int, message: str, hint: str | None = None, problems: list[str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": message, "hint": hint}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status)
