"""The control plane's HTTP surface: the REST API for the CLI and the TUI, its live
streams (events, tap), and the route of the sidecars' links (``sidecars``).

Every route but ``/healthz`` needs ``Authorization: Bearer <project token>``.
Errors are JSON: ``{"error": "...", "hint": "...", "problems": [...]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from devmesh import payloads
from devmesh.config import dump_project
from devmesh.config.dump import dump_policy
from devmesh.config.model import Project
from devmesh.controlplane import prometheus, statusview
from devmesh.controlplane.identities import Identities
from devmesh.controlplane.instances import latest_logs, run_cli
from devmesh.controlplane.mesh import Mesh, UnknownService
from devmesh.controlplane.metrics import DEFAULT_WINDOW, WINDOWS
from devmesh.controlplane.overrides import UnknownFault
from devmesh.controlplane.sidecars import NotHoldable, SidecarLinks
from devmesh.controlplane.streams import (
    TAP_RATE,
    Events,
    Subscriber,
    Tap,
    TapFilter,
    TapFilterError,
    ticks,
)
from devmesh.controlplane.traces import TraceStore, to_otlp
from devmesh.errors import ConfigError, DevmeshError, UsageError
from devmesh.pki import DEFAULT_TTL
from devmesh.plan import plan_instances
from devmesh.runtime.supervisor import Supervisor
from devmesh.strictjson import NotJsonNumber
from devmesh.strictjson import loads as strict_loads
from devmesh.workspace import Workspace
from proxy.control import STREAM_PATH

log = logging.getLogger("devmesh.controlplane")

BUSY_WAIT = 30.0
"""How long a kill or restart asked for waits for the one that runs."""
EXPIRY_CHECK = 0.25
"""How often time-boxed faults are checked for their end, in seconds."""
MESH_KEY = web.AppKey("mesh", Mesh)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnknownTrace(UsageError):
    """A trace id the control plane does not keep."""


class Busy(DevmeshError):
    """Another kill or restart runs; answered 409."""


class ControlPlaneAPI:
    """The routes over the mesh model (``mesh``): REST answers in ``devmesh.payloads``'s
    shapes, the event and tap streams, the sidecars' links (``sidecars``), and the tasks
    that run in the background (the per-second tick, supervision, fault expiry)."""

    def __init__(
        self,
        mesh: Mesh,
        token: str,
        allowed_networks: Sequence[Network] = (),
        workspace: Workspace | None = None,
        cert_ttl: float = DEFAULT_TTL,
    ) -> None:
        """``workspace``: the project's, for its CA (sidecars get identities) and the
        instances' logs, kill and restart (without it, none of these)."""
        self.mesh = mesh
        self.workspace = workspace
        self.identities = Identities(workspace.ca_dir, cert_ttl) if workspace is not None else None
        self._token = token.encode()
        self._allowed = tuple(allowed_networks)
        self.events = Events()
        self.tap = Tap()
        self.traces = TraceStore()
        self.sidecars = SidecarLinks(mesh, self.events, self.ingest, self.identities)
        self._windows: dict[Subscriber[payloads.Event], int] = {}
        self._streams: set[web.WebSocketResponse] = set()
        """The event and tap streams' sockets, closed at shutdown like the sidecars'."""
        self._lifecycle = asyncio.Lock()
        """One kill or restart at a time: they act on the same runtime records and ports."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._peers, self._errors, self._auth])
        app[MESH_KEY] = self.mesh
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/events", self.event_stream)
        app.router.add_get("/v1/tap", self.tap_stream)
        app.router.add_get("/metrics", self.prometheus_metrics)
        app.router.add_get("/v1/traces", self.get_traces)
        app.router.add_get("/v1/traces/{trace}", self.get_trace)
        app.router.add_get("/v1/certs", self.get_certs)
        app.router.add_get("/v1/instances/{instance}/logs", self.get_logs)
        app.router.add_post("/v1/instances/{instance}/kill", self.post_kill)
        app.router.add_post("/v1/services/{service}/restart", self.post_restart)
        app.router.add_post("/v1/instances/{instance}/hold", self.post_hold)
        app.router.add_post("/v1/instances/{instance}/release", self.post_release)
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
        app.router.add_get("/v1/authz", self.get_authz)
        app.router.add_post("/v1/authz", self.post_authz)
        app.router.add_delete("/v1/authz/{rule}", self.delete_authz)
        app.router.add_get("/v1/mtls", self.get_mtls)
        app.router.add_put("/v1/mtls", self.put_mtls)
        app.cleanup_ctx.append(self._expiry)
        app.cleanup_ctx.append(self._ticker)
        app.cleanup_ctx.append(self._supervise)
        app.router.add_get(STREAM_PATH, self.sidecars.stream)
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
        except (UnknownService, UnknownFault, UnknownTrace) as exc:
            return _error(404, exc.message, exc.hint)
        except (Busy, NotHoldable) as exc:
            return _error(409, exc.message, exc.hint)
        except DevmeshError as exc:
            return _error(400, exc.message, exc.hint)

    # -- API -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        project = self.mesh.project
        return web.json_response(
            payloads.Healthz(status="ok", project=project.name if project else None)
        )

    async def status(self, request: web.Request) -> web.Response:
        window = _window(request)
        history = request.query.get("history") in ("1", "true")
        return web.json_response(statusview.status(self.mesh, window, history=history))

    async def prometheus_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=prometheus.render(self.mesh),
            headers={"Content-Type": prometheus.CONTENT_TYPE},
        )

    # -- traces ------------------------------------------------------------------------

    async def get_traces(self, request: web.Request) -> web.Response:
        """The latest traces (``service``, ``failed=1``, ``limit``); ``format=otlp``: as
        OTLP/JSON, spans and all."""
        limit = int(_number(request, "limit", 20))
        if limit < 1:
            raise DevmeshError(f"limit must be 1 or more, not {limit}")
        found = self.traces.recent(
            limit,
            service=request.query.get("service") or None,
            failed=request.query.get("failed") in ("1", "true"),
        )
        if request.query.get("format") == "otlp":
            return web.json_response(to_otlp(found))
        return web.json_response(payloads.Traces(traces=[t.summary() for t in found]))

    async def get_trace(self, request: web.Request) -> web.Response:
        """One trace with its spans, by id or by the start of its id; ``format=otlp``."""
        wanted = request.match_info["trace"]
        found = self.traces.find(wanted)
        if not found:
            raise UnknownTrace(
                f"no trace {wanted} is kept (the latest {self.traces.capacity} are)",
                "see `devmesh trace` for the latest ones, or `devmesh tap` for trace ids",
            )
        if len(found) > 1:
            raise DevmeshError(
                f"{len(found)} traces start with {wanted}", "give more of the trace id"
            )
        if request.query.get("format") == "otlp":
            return web.json_response(to_otlp(found))
        return web.json_response(found[0].to_json())

    # -- identities --------------------------------------------------------------------

    async def get_certs(self, request: web.Request) -> web.Response:
        """The project's CA and the identity each sidecar holds."""
        if self.identities is None:
            raise DevmeshError("this control plane was started without its project folder")
        return web.json_response(self.identities.to_json())

    # -- instances -----------------------------------------------------------------------

    def _project_workspace(self) -> Workspace:
        if self.workspace is None:
            raise DevmeshError("this control plane was started without its project folder")
        return self.workspace

    def _instance(self, request: web.Request) -> str:
        instance = request.match_info["instance"]
        project = self.mesh.project
        known = {spec.id for spec in plan_instances(project)} if project else set()
        if instance not in known:
            raise UnknownService(
                f"there is no instance named {instance!r}",
                f"instances: {', '.join(sorted(known))}" if known else None,
            )
        return instance

    @contextlib.asynccontextmanager
    async def _busy(self) -> AsyncIterator[None]:
        """One kill or restart at a time: one asked for while another runs waits for it (a
        restart right after a kill), for ``BUSY_WAIT`` at most."""
        try:
            await asyncio.wait_for(self._lifecycle.acquire(), BUSY_WAIT)
        except TimeoutError:
            raise Busy(
                "another kill or restart is still running", "try again when it has finished"
            ) from None
        try:
            yield
        finally:
            self._lifecycle.release()

    async def get_logs(self, request: web.Request) -> web.Response:
        """The instance's latest ``lines`` (100) log lines."""
        workspace = self._project_workspace()
        instance = self._instance(request)
        lines = int(_number(request, "lines", 100))
        found = await asyncio.to_thread(latest_logs, workspace, instance, lines)
        return web.json_response(payloads.Logs(instance=instance, lines=found))

    async def post_kill(self, request: web.Request) -> web.Response:
        """Kill the instance (SIGKILL), as `devmesh kill` does."""
        instance = self._instance(request)
        async with self._busy():
            await run_cli(self._project_workspace(), "kill", instance)
        return web.json_response(payloads.Killed(killed=instance))

    async def post_restart(self, request: web.Request) -> web.Response:
        """Restart the service's instances, as `devmesh restart` does; answers once each is
        ready again."""
        service = request.match_info["service"]
        project = self.mesh.project
        if project is None or service not in project.services:
            raise UnknownService(f"there is no service named {service!r}")
        async with self._busy():
            await run_cli(self._project_workspace(), "restart", service)
        restarted = [s.id for s in plan_instances(project) if s.service == service]
        return web.json_response(payloads.Restarted(service=service, restarted=restarted))

    async def post_hold(self, request: web.Request) -> web.Response:
        """Hold the instance's calls at its sidecar while its app restarts (``proxy.appgate``):
        its version's other instances take its calls meanwhile, if it has any; answers once
        none is in flight at its app."""
        instance = self._instance(request)
        in_flight = await self.sidecars.hold(instance)
        return web.json_response(payloads.Held(instance=instance, in_flight=in_flight))

    async def post_release(self, request: web.Request) -> web.Response:
        """Let the calls held for the instance's restart go on, and route to it again."""
        instance = self._instance(request)
        await self.sidecars.release(instance)
        return web.json_response(payloads.Released(instance=instance))

    # -- live streams ----------------------------------------------------------------

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """Per-second status (``?window=`` seconds of rates, with each edge's last minute),
        breaker changes and config changes, as JSON messages, until the client leaves."""
        window = _window(request)
        subscriber = self.events.subscribe()
        self._windows[subscriber] = window
        subscriber.offer(self._status_event(window))
        try:
            return await _pump(request, subscriber, self._streams)
        finally:
            self.events.unsubscribe(subscriber)
            del self._windows[subscriber]

    async def tap_stream(self, request: web.Request) -> web.StreamResponse:
        """Sampled request records (``service``, ``path``, ``status``, ``min_latency_ms``
        filters; at most ``rate`` a second) and, each second, what was not shown."""
        try:
            where = TapFilter.from_query(request.query)
        except TapFilterError as exc:
            raise DevmeshError(str(exc)) from None
        rate = _number(request, "rate", TAP_RATE)
        if rate <= 0:
            raise DevmeshError(f"rate must be above 0, not {rate:g}")
        subscriber = self.tap.subscribe(where, rate)
        try:
            return await _pump(request, subscriber, self._streams)
        finally:
            self.tap.unsubscribe(subscriber)

    def _tick(self, now: float) -> None:
        self.mesh.metrics.forget_idle(now)
        made: dict[int, payloads.StatusEvent] = {}
        for subscriber in list(self.events.subscribers):
            window = self._windows.get(subscriber, DEFAULT_WINDOW)
            if window not in made:
                made[window] = self._status_event(window)
            subscriber.offer(made[window])
        for tap in list(self.tap.subscribers):
            tap.offer(tap.report())

    def _status_event(self, window: int) -> payloads.StatusEvent:
        status = statusview.status(self.mesh, window, history=True)
        return {"type": "status", "ts": time.time(), **status}

    # -- the project and splits ---------------------------------------------------------

    async def get_project(self, request: web.Request) -> web.Response:
        project = self.mesh.project
        return web.json_response(dump_project(project) if project else None)

    async def put_project(self, request: web.Request) -> web.Response:
        project: Project = self.mesh.apply_project(await _json_body(request))
        await self.publish()
        return web.json_response(
            payloads.ProjectApplied(project=project.name, services=list(project.services))
        )

    async def put_split(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        weights = body.get("weights") if isinstance(body, dict) else None
        if not isinstance(weights, dict):
            raise DevmeshError('the body must be {"weights": {"<version>": <number>, ...}}')
        service = request.match_info["service"]
        self.mesh.set_split(service, weights)
        await self.publish()
        return self._split_reply(service)

    def _split_reply(self, service: str) -> web.Response:
        return web.json_response(
            payloads.SplitAnswer(service=service, split=self.mesh.split_for(service))
        )

    async def delete_split(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        self.mesh.clear_split(service)
        await self.publish()
        return self._split_reply(service)

    # -- policy and faults ---------------------------------------------------------

    def _policy_reply(self, service: str) -> web.Response:
        return web.json_response(
            payloads.PolicyAnswer(
                service=service,
                policy=dump_policy(self.mesh.policy(service)),
                overrides=self.mesh.policy_overrides(service),
            )
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
        return web.json_response(
            payloads.Faults(faults=[f.to_json(now) for f in self.mesh.faults()])
        )

    async def post_fault(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("service"), str):
            raise DevmeshError('the body must be {"service": "...", "fault": {...}, "for": null}')
        fault = body.get("fault")
        if not isinstance(fault, dict):
            raise DevmeshError("the fault must be an object, in devmesh.yaml's shape")
        added = self.mesh.add_fault(body["service"], fault, body.get("for"))
        await self.publish()
        return web.json_response(payloads.FaultAdded(fault=added.to_json(time.time())), status=201)

    async def delete_fault(self, request: web.Request) -> web.Response:
        removed = self.mesh.remove_fault(request.match_info["fault"])
        await self.publish()
        return web.json_response(payloads.FaultRemoved(removed=[removed.to_json(time.time())]))

    async def delete_faults(self, request: web.Request) -> web.Response:
        removed = self.mesh.reset_faults(request.query.get("service"))
        await self.publish()
        return web.json_response(payloads.FaultsReset(removed=removed))

    # -- authorization and mTLS ------------------------------------------------------

    async def get_authz(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.Rules(rules=[r.to_json() for r in self.mesh.rules()]))

    async def post_authz(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("rule"), dict):
            raise DevmeshError('the body must be {"rule": {...}}, a rule in devmesh.yaml\'s shape')
        added = self.mesh.add_rule(body["rule"])
        await self.publish()
        return web.json_response(payloads.RuleAdded(rule=added.to_json()), status=201)

    async def delete_authz(self, request: web.Request) -> web.Response:
        removed = self.mesh.remove_rule(request.match_info["rule"])
        await self.publish()
        return web.json_response(payloads.RuleRemoved(removed=removed.to_json()))

    async def get_mtls(self, request: web.Request) -> web.Response:
        return web.json_response(payloads.MtlsModes(modes=self.mesh.mtls_modes()))

    async def put_mtls(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            body = {"service": 0}
        service, mode = body.get("service"), body.get("mode")
        if not (service is None or isinstance(service, str)) or not (
            mode is None or isinstance(mode, str)
        ):
            raise DevmeshError('the body must be {"service": "..." or null, "mode": "strict"}')
        modes = self.mesh.set_mtls(service, mode)
        await self.publish()
        return web.json_response(payloads.MtlsModes(modes=modes))

    # -- sidecars, and what runs in the background ------------------------------------

    async def _ticker(self, app: web.Application) -> AsyncIterator[None]:
        """Once a second: the status to event subscribers, what each tap did not show,
        and idle series forgotten."""

        async def run() -> None:
            async for now in ticks():
                try:
                    self._tick(now)
                    if self.mesh.expire_absent() | self.mesh.expire_holds():
                        await self.publish()
                    await self.sidecars.renew_identities()
                except Exception:  # a bug of ours: say so, and keep the streams alive
                    log.exception("the per-second tick failed")

        task = asyncio.create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _supervise(self, app: web.Application) -> AsyncIterator[None]:
        """What the runtime started and died is started again (``devmesh.runtime.supervisor``);
        the mesh shows it restarting, and a dead sidecar leaves routing at once."""
        if self.workspace is None:
            yield
            return
        supervisor = Supervisor(self.workspace, lambda: self.mesh.project)

        async def run() -> None:
            while True:
                try:
                    report = await asyncio.to_thread(supervisor.check)
                    if report is not None and self.mesh.apply_supervision(report):
                        await self.publish()
                except Exception:  # a bug of ours: say so, and keep supervising
                    log.exception("supervising the runtime's processes failed")
                await asyncio.sleep(supervisor.interval)

        task = asyncio.create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(supervisor.close)  # after the pass its thread may still run

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

    def ingest(self, records: list[object], dropped: int = 0) -> None:
        """Take a batch of a sidecar's request records: counted, tapped, traced."""
        valid = self.mesh.metrics.ingest(records, dropped)
        self.tap.feed(valid)
        self.traces.add(valid)

    async def publish(self) -> bool:
        """Send a new snapshot to every sidecar, if the mesh changed; True if so."""
        return await self.sidecars.publish()

    async def _close_sockets(self, app: web.Application) -> None:
        await self.sidecars.close()
        for ws in list(self._streams):
            await ws.close(code=1001, message=b"control plane shutting down")


async def _pump(
    request: web.Request, subscriber: Subscriber[Any], streams: set[web.WebSocketResponse]
) -> web.WebSocketResponse:
    """Send ``subscriber``'s messages on a WebSocket until the client closes it (or the
    control plane, at shutdown, through ``streams``)."""
    ws = web.WebSocketResponse(heartbeat=10.0)
    await ws.prepare(request)
    streams.add(ws)

    async def send() -> None:
        while True:
            message = await subscriber.next()
            await ws.send_json(message)

    sender = asyncio.create_task(send())
    try:
        async for _ in ws:
            pass  # the client says nothing; reading notices it leave
    finally:
        streams.discard(ws)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await sender
    return ws


def _window(request: web.Request) -> int:
    window = int(_number(request, "window", DEFAULT_WINDOW))
    if window not in WINDOWS:
        choices = ", ".join(str(w) for w in WINDOWS)
        raise DevmeshError(f"window must be one of {choices} (seconds), not {window}")
    return window


def _number(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DevmeshError(f"{name} must be a number, not {raw!r}")
    return value


async def _json_body(request: web.Request) -> Any:
    """The request's JSON body, for every route that takes one: only JSON's own numbers (no
    NaN, no Infinity, none beyond a float), so no route ever sees one that is not."""
    try:
        return await request.json(loads=strict_loads)
    except NotJsonNumber as exc:
        raise DevmeshError(
            f"in the request body, {exc}", "send a finite number, such as 30 or 0.5"
        ) from None
    except ValueError as exc:
        raise DevmeshError(f"the request body is not valid JSON: {exc}") from exc


def _error(
    status: int, message: str, hint: str | None = None, problems: list[str] | None = None
) -> web.Response:
    body = payloads.Error(error=message, hint=hint)
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status)
