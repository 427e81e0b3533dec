"""The sidecar's listeners and the forwarding between them and upstreams.

Three kinds of listener, one handler each:

* outbound: the instance's own calls, as an HTTP proxy (``HTTP_PROXY``) or
  with a plain ``Host`` header; the destination service is the host name;
* inbound: calls from other sidecars, handed to the instance on localhost,
  over mTLS or plaintext as the service's mode says (``proxy.mtls``), each
  judged by the service's authorization policies first (``proxy.authz``);
* gateway: traffic entering the mesh from the host, bound for one service.

Bodies are streamed both ways and upstream connections are pooled. Every
request ends in exactly one telemetry ``Record``.

A request that never reached an app (the endpoint's sidecar could not be
reached, or it answered that it could not reach its app) and has no body to
resend is tried once more on another endpoint of the service, as Envoy does
for connect failures by default. A request with a body is never sent twice:
its body was streamed to the first endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote

from multidict import CIMultiDict

from proxy.appgate import HOLD_LIMIT, AppGate
from proxy.authz import evaluate, normalized
from proxy.bootstrap import Bootstrap
from proxy.destinations import Destinations
from proxy.headers import (
    DENIED_HEADER,
    SOURCE_HEADER,
    append_forwarded_for,
    forwardable,
    trace_hop,
)
from proxy.httpclient import Pool
from proxy.httpserver import MAX_BODY, Listener, Request
from proxy.identity import IdentityStore
from proxy.mtls import Gate, service_of
from proxy.origdst import original_destination
from proxy.outbound import Call, OutboundCalls
from proxy.router import Router
from proxy.snapshot import DEFAULT_MTLS, Snapshot
from proxy.telemetry import Direction, Record, TelemetryBuffer
from proxy.upstream import NoAnswer, Outcome, Sent, relay, reply, send

log = logging.getLogger("devmesh.proxy")

GATEWAY_SOURCE = "ingress"
"""The source name of traffic that enters the mesh through the gateway."""
EXTERNAL_SOURCE = "external"
"""The source name of inbound traffic that did not come through a sidecar."""

_CONNECT_TIMEOUT = 10.0
_MAX_PATH_IN_RECORD = 256

Handler = Callable[[Request], Awaitable[None]]


@dataclass
class BoundPorts:
    inbound: int | None = None
    outbound: int | None = None
    gateway: dict[str, int] = field(default_factory=dict)


class Sidecar:
    """The data plane of one instance (or of the gateway)."""

    def __init__(
        self,
        boot: Bootstrap,
        router: Router,
        telemetry: TelemetryBuffer,
        on_app_refused: Callable[[str], None] = lambda detail: None,
        destinations: Destinations | None = None,
        identity: IdentityStore | None = None,
    ) -> None:
        """``on_app_refused(detail)`` is called when the instance's app refuses a
        connection the inbound listener opens for a request (passive health).
        ``identity`` is this sidecar's, for mTLS (``None``: plaintext only)."""
        self.boot = boot
        self.router = router
        self.telemetry = telemetry
        self.on_app_refused = on_app_refused
        if destinations is None:
            destinations = Destinations()
            destinations.sync(router.snapshot)
            router.subscribe(destinations.sync)
        self.destinations = destinations
        self.identity = identity
        self.pool = Pool(connect_timeout=_CONNECT_TIMEOUT)
        self.calls = OutboundCalls(self.pool, router, destinations, identity=identity)
        self.ports = BoundPorts()
        self.app_gate = AppGate()
        """Held while the app restarts: calls to it wait instead of failing."""
        self._listeners: list[Listener] = []
        self.inbound: Listener | None = None
        self._mode = self._gate().mode
        router.subscribe(self._mode_changed)

    async def start(self) -> BoundPorts:
        """Bind every listener; raises ``OSError`` (port taken) with nothing left bound."""
        try:
            if self.boot.role == "sidecar":
                self.ports.outbound = await self._listen(
                    self._outbound, self.boot.outbound_host, self.boot.outbound_port
                )
                self.ports.inbound = await self._listen(
                    self._inbound, self.boot.listen_host, self.boot.inbound_port, self._gate
                )
                self.inbound = self._listeners[-1]
            for listener in self.boot.gateway:
                self.ports.gateway[listener.service] = await self._listen(
                    self._gateway_handler(listener.service), self.boot.listen_host, listener.port
                )
        except BaseException:
            await self.stop()
            raise
        return self.ports

    async def stop(self) -> None:
        for listener in reversed(self._listeners):
            await listener.stop()
        self._listeners.clear()
        self.pool.close()

    async def _listen(
        self, handler: Handler, host: str, port: int, gate: Callable[[], Gate] | None = None
    ) -> int:
        listener = Listener(handler, gate)
        bound = await listener.start(host, port)
        self._listeners.append(listener)
        return bound

    def _gate(self) -> Gate:
        """What the inbound listener lets in now: the service's mode, this identity."""
        route = self.router.snapshot.routes.get(self.boot.service)
        mode = route.mtls if route is not None else DEFAULT_MTLS
        current = self.identity.current if self.identity is not None else None
        if current is None:
            return Gate(mode, None, None)
        return Gate(mode, current.server, current.trust_prefix)

    def _mode_changed(self, snapshot: Snapshot) -> None:
        """A new mode applies to open connections too: those it no longer admits close."""
        gate = self._gate()
        if gate.mode != self._mode and self.inbound is not None:
            self.inbound.enforce(gate)
        self._mode = gate.mode

    # -- handlers -------------------------------------------------------------

    async def _outbound(self, request: Request) -> None:
        _, host, _ = _target(request)
        if request.method == "CONNECT":
            self._local_reply(
                request,
                "outbound",
                host,
                501,
                "tunnel-unsupported",
                "devmesh proxies plain HTTP; CONNECT tunnels are not supported",
            )
            return
        resolved = self.router.resolve(host)
        if resolved is not None:
            service, version = resolved
            await self._to_service(request, service, self.boot.service, version)
            return
        await self._passthrough(request)

    async def _inbound(self, request: Request) -> None:
        start = time.perf_counter()
        principal = request.principal
        if principal is not None:
            source = service_of(principal)  # proven by its certificate
        else:
            source = request.headers.get(SOURCE_HEADER, EXTERNAL_SOURCE)  # as it says
        outcome = Outcome(
            instance=self.boot.instance, version=self.boot.version, mtls=principal is not None
        )
        with _until_the_caller_leaves(request, outcome):
            await self._judged(request, outcome)
        self._record(request, "inbound", source, self.boot.service, outcome, start)

    async def _judged(self, request: Request, outcome: Outcome) -> None:
        """Judge an inbound request by the service's authorization policies, then hand it to
        the instance's app (through its gate, held while the app restarts)."""
        principal = request.principal
        route = self.router.snapshot.routes.get(self.boot.service)
        verdict = None
        if route is not None and route.authz:
            unsafe = canonical_target(request)
            if unsafe is not None:
                await relay(
                    request, NoAnswer("bad-path", unsafe, status=400), outcome, trusted=False
                )
                return
            verdict = evaluate(route.authz, principal, request.path, request.method)
        if verdict is not None and verdict.audit is not None:
            outcome.authz = f"audit:{verdict.audit.policy}"
            log.info("audit: %s (not enforced)", verdict.audit.reason)
        if verdict is not None and not verdict.allowed:
            outcome.authz = f"deny:{verdict.policy}"
            await relay(
                request,
                NoAnswer(
                    "denied",
                    f"{self.boot.service}: {verdict.reason}",
                    status=403,
                    headers={DENIED_HEADER: verdict.reason},
                ),
                outcome,
                trusted=False,
            )
        elif self.boot.app_port is None:
            await relay(
                request,
                NoAnswer("no-port", f"{self.boot.service} declares no port to receive calls on"),
                outcome,
                trusted=False,
            )
        elif not await self.app_gate.enter():
            await relay(
                request,
                NoAnswer(
                    "app-restarting",
                    f"{self.boot.instance} was held for its app's restart longer than "
                    f"{HOLD_LIMIT:g}s",
                ),
                outcome,
                trusted=False,
            )
        else:
            try:
                await self._to_app(request, self.boot.app_port, outcome)
            finally:
                self.app_gate.leave()

    async def _to_app(self, request: Request, app_port: int, outcome: Outcome) -> None:
        headers = forwardable(request.headers)
        headers.popall(SOURCE_HEADER, None)
        # The server span: the app's own calls, if it passes traceparent on, are its children.
        outcome.span = trace_hop(headers)
        _answer_expect_continue(request, headers)
        sent = await send(
            self.pool,
            request,
            "127.0.0.1",
            app_port,
            headers,
            request.body if request.has_body else None,
            self.boot.instance,
        )
        if isinstance(sent, NoAnswer) and sent.refused:
            self.on_app_refused(f"connection refused on 127.0.0.1:{app_port} by a request")
        await relay(request, sent, outcome, trusted=False)

    def _gateway_handler(self, service: str) -> Handler:
        async def handle(request: Request) -> None:
            await self._to_service(request, service, GATEWAY_SOURCE)

        return handle

    async def _to_service(
        self, request: Request, service: str, source: str, version: str | None = None
    ) -> None:
        start = time.perf_counter()
        outcome = Outcome()
        headers = forwardable(request.headers, drop_mesh=True)
        headers[SOURCE_HEADER] = source
        headers["Host"] = _target(request)[0]
        if source == GATEWAY_SOURCE:
            append_forwarded_for(headers, request.remote)
        outcome.span = trace_hop(headers)
        too_big = _too_big(request)
        with _until_the_caller_leaves(request, outcome):
            if too_big is not None:
                await relay(request, too_big, outcome, trusted=True)
            else:
                _answer_expect_continue(request, headers)
                await self.calls.call(Call(request, service, source, headers, version), outcome)
        self._record(request, "outbound", source, service, outcome, start)

    async def _passthrough(self, request: Request) -> None:
        """A destination outside the mesh is called directly, as Istio's ALLOW_ANY does.

        A connection that iptables redirected here goes where it was going (its
        original destination), whatever its ``Host`` says.
        """
        start = time.perf_counter()
        outcome = Outcome()
        authority, host, port = _target(request)
        headers = forwardable(request.headers, drop_mesh=True)
        headers["Host"] = authority
        outcome.span = trace_hop(headers)
        address = (host, port)
        original = original_destination(request.transport)
        if original is not None:
            address = original
        with _until_the_caller_leaves(request, outcome):
            if self._is_own_listener(request, address):
                sent: Sent = NoAnswer(
                    "loop",
                    f"{authority} is this sidecar's own listener: the request would loop; "
                    "name a service of the mesh or an outside host",
                    status=508,
                )
            else:
                _answer_expect_continue(request, headers)
                sent = await send(
                    self.pool,
                    request,
                    address[0],
                    address[1],
                    headers,
                    request.body if request.has_body else None,
                )
            await relay(request, sent, outcome, trusted=False)
        self._record(request, "outbound", self.boot.service, host, outcome, start)

    def _is_own_listener(self, request: Request, address: tuple[str, int]) -> bool:
        ports = {self.ports.inbound, self.ports.outbound, *self.ports.gateway.values()}
        if address[1] not in ports:
            return False
        transport = request.transport
        here = transport.get_extra_info("sockname") if transport is not None else None
        local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", self.boot.listen_host}
        local.add(self.boot.outbound_host)
        if isinstance(here, tuple):
            local.add(here[0])
        return address[0] in local

    def _local_reply(
        self,
        request: Request,
        direction: Direction,
        destination: str,
        status: int,
        code: str,
        message: str,
    ) -> None:
        start = time.perf_counter()
        reply(request, status, code, message)
        outcome = Outcome(status=status, error=code)
        self._record(request, direction, self.boot.service, destination, outcome, start)

    def _record(
        self,
        request: Request,
        direction: Direction,
        source: str,
        destination: str,
        outcome: Outcome,
        start: float,
    ) -> None:
        span = outcome.span
        self.telemetry.add(
            Record(
                ts=time.time(),
                direction=direction,
                source=source,
                destination=destination,
                version=outcome.version,
                instance=outcome.instance,
                status=outcome.status,
                latency_ms=(time.perf_counter() - start) * 1000.0,
                method=request.method,
                path=request.path[:_MAX_PATH_IN_RECORD],
                error=outcome.error,
                fault=outcome.fault,
                retries=outcome.retries,
                trace_id=span.trace_id if span else None,
                span_id=span.span_id if span else None,
                parent_id=span.parent_id if span else None,
                mtls=outcome.mtls,
                authz=outcome.authz,
            )
        )


@contextmanager
def _until_the_caller_leaves(request: Request, outcome: Outcome) -> Iterator[None]:
    """Run the block that answers ``request``; if the caller's connection breaks meanwhile
    (its handling is cancelled, ``Request.lost``), the request ends there as a downstream
    reset: the caller's doing, which says nothing of the upstream."""
    try:
        yield
    except asyncio.CancelledError:
        task = request.task
        if not request.lost or task is None or task.uncancel() > 0:
            raise  # not (only) the caller leaving: the sidecar stopping, say
        outcome.error = "downstream-reset"
        if not request.started:
            outcome.status = 0


_ESCAPED_SEPARATOR = re.compile("%(2f|5c)", re.IGNORECASE)
_ESCAPED_DOT = re.compile("%2e", re.IGNORECASE)


def canonical_target(request: Request) -> str | None:
    """Give ``request`` the path its service's authorization rules judge, and pass on that
    same path (Istio's path normalisation): ``%2e`` decoded, dot segments resolved, runs of
    ``/`` merged. A path the rules cannot judge safely (an escaped ``/`` or ``\\``, or a
    fragment) is not normalised: why it is refused comes back instead."""
    raw, mark, query = request.path_qs.partition("?")
    if "#" in request.target:
        return "the request target holds a fragment (#), which HTTP never sends"
    if _ESCAPED_SEPARATOR.search(raw):
        return "the path holds an escaped '/' or '\\', which authorization rules cannot judge"
    path = normalized(_ESCAPED_DOT.sub(".", raw))
    if path != raw:
        request.path_qs = path + mark + query
        request.path = unquote(path) if "%" in path else path
    return None


def _target(request: Request) -> tuple[str, str, int]:
    """Where the caller asked to go, as ``(authority, host, port)``: the absolute-form
    target, else ``Host`` (RFC 9112 3.2.2). The host is lower-cased."""
    authority = request.headers.get("Host", "")
    if request.target[:7].lower() == "http://":
        authority = request.target[7:].split("/", 1)[0].split("?", 1)[0]
    host, port = _split_authority(authority)
    return authority, host, port


def _split_authority(authority: str) -> tuple[str, int]:
    host, port = authority, 80
    if authority.startswith("["):  # an IPv6 literal
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif ":" in authority:
        name, _, digits = authority.rpartition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    if "@" in host:
        host = host.rpartition("@")[2]
    return host.lower(), port


def _answer_expect_continue(request: Request, headers: CIMultiDict[str]) -> None:
    """As Envoy does by default: answer "100 Continue" here and do not pass the
    expectation on (an upstream that never answers it would leave the client
    library waiting for a 100 that does not come). Once per request."""
    headers.popall("Expect", None)
    request.send_continue()


def _too_big(request: Request) -> NoAnswer | None:
    length = request.body.length
    if length is not None and length > MAX_BODY:
        return NoAnswer(
            "body-too-large",
            f"the request body ({length} bytes) is over the mesh's limit of {MAX_BODY} bytes",
            status=413,
        )
    return None
