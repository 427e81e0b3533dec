"""The sidecar's listeners and the forwarding between them and upstreams.

Three kinds of listener, one handler each:

* outbound: the instance's own calls, as an HTTP proxy (``HTTP_PROXY``) or
  with a plain ``Host`` header; the destination service is the host name;
* inbound: calls from other sidecars, handed to the instance on localhost;
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

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.bootstrap import Bootstrap
from proxy.destinations import Destinations
from proxy.headers import (
    SOURCE_HEADER,
    append_forwarded_for,
    forwardable,
    trace_hop,
)
from proxy.origdst import original_destination
from proxy.outbound import Call, OutboundCalls
from proxy.router import Router
from proxy.telemetry import Direction, Record, TelemetryBuffer
from proxy.upstream import NoAnswer, Outcome, relay, reply, send

log = logging.getLogger("devmesh.proxy")

GATEWAY_SOURCE = "ingress"
"""The source name of traffic that enters the mesh through the gateway."""
EXTERNAL_SOURCE = "external"
"""The source name of inbound traffic that did not come through a sidecar."""

_CONNECT_TIMEOUT = 10.0
_MAX_PATH_IN_RECORD = 256

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


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
    ) -> None:
        """``on_app_refused(detail)`` is called when the instance's app refuses a
        connection the inbound listener opens for a request (passive health)."""
        self.boot = boot
        self.router = router
        self.telemetry = telemetry
        self.on_app_refused = on_app_refused
        if destinations is None:
            destinations = Destinations()
            destinations.sync(router.snapshot)
            router.subscribe(destinations.sync)
        self.destinations = destinations
        self.calls = OutboundCalls(self._client, router, destinations)
        self.ports = BoundPorts()
        self._runners: list[web.BaseRunner] = []
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Sidecar.start() was not called"
        return self._session

    async def start(self) -> BoundPorts:
        """Bind every listener; raises ``OSError`` (port taken) with nothing left bound."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=10),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        try:
            if self.boot.role == "sidecar":
                self.ports.outbound = await self._listen(
                    self._outbound, self.boot.outbound_host, self.boot.outbound_port
                )
                self.ports.inbound = await self._listen(
                    self._inbound, self.boot.listen_host, self.boot.inbound_port
                )
            for listener in self.boot.gateway:
                self.ports.gateway[listener.service] = await self._listen(
                    self._gateway_handler(listener.service), self.boot.listen_host, listener.port
                )
        except BaseException:
            await self.stop()
            raise
        return self.ports

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _listen(self, handler: Handler, host: str, port: int) -> int:
        server = web.Server(handler, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound: int = runner.addresses[-1][1]
        return bound

    # -- handlers -------------------------------------------------------------

    async def _outbound(self, request: web.BaseRequest) -> web.StreamResponse:
        target = _target(request)
        host = (target.host or "").lower()
        if request.method == "CONNECT":
            return await self._local_reply(
                request,
                "outbound",
                host,
                501,
                "tunnel-unsupported",
                "devmesh proxies plain HTTP; CONNECT tunnels are not supported",
            )
        resolved = self.router.resolve(host)
        if resolved is not None:
            service, version = resolved
            return await self._to_service(request, service, self.boot.service, version)
        return await self._passthrough(request, target)

    async def _inbound(self, request: web.BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        source = request.headers.get(SOURCE_HEADER, EXTERNAL_SOURCE)
        outcome = Outcome(instance=self.boot.instance, version=self.boot.version)
        if self.boot.app_port is None:
            response = await relay(
                request,
                NoAnswer("no-port", f"{self.boot.service} declares no port to receive calls on"),
                outcome,
                trusted=False,
            )
        else:
            headers = forwardable(request.headers)
            headers.popall(SOURCE_HEADER, None)
            url = URL(
                f"http://127.0.0.1:{self.boot.app_port}{request.url.raw_path_qs}", encoded=True
            )
            await _answer_expect_continue(request, headers)
            body = request.content if request.body_exists else None
            sent = await send(self._client(), request, url, headers, body, self.boot.instance)
            if isinstance(sent, NoAnswer) and sent.refused:
                self.on_app_refused(
                    f"connection refused on 127.0.0.1:{self.boot.app_port} by a request"
                )
            response = await relay(request, sent, outcome, trusted=False)
        self._record(request, "inbound", source, self.boot.service, outcome, start)
        return response

    def _gateway_handler(self, service: str) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self._to_service(request, service, GATEWAY_SOURCE)

        return handle

    async def _to_service(
        self, request: web.BaseRequest, service: str, source: str, version: str | None = None
    ) -> web.StreamResponse:
        start = time.perf_counter()
        outcome = Outcome()
        headers = forwardable(request.headers, drop_mesh=True)
        headers[SOURCE_HEADER] = source
        headers["Host"] = _target(request).raw_authority
        if source == GATEWAY_SOURCE:
            append_forwarded_for(headers, request.remote)
        outcome.trace_id = trace_hop(headers)
        too_big = _too_big(request)
        if too_big is not None:
            response = await relay(request, too_big, outcome, trusted=True)
            self._record(request, "outbound", source, service, outcome, start)
            return response
        await _answer_expect_continue(request, headers)
        response = await self.calls.call(Call(request, service, source, headers, version), outcome)
        self._record(request, "outbound", source, service, outcome, start)
        return response

    async def _passthrough(self, request: web.BaseRequest, target: URL) -> web.StreamResponse:
        """A destination outside the mesh is called directly, as Istio's ALLOW_ANY does.

        A connection that iptables redirected here goes where it was going (its
        original destination), whatever its ``Host`` says.
        """
        start = time.perf_counter()
        outcome = Outcome()
        headers = forwardable(request.headers, drop_mesh=True)
        headers["Host"] = target.raw_authority
        url = target
        original = original_destination(request.transport)
        if original is not None:
            url = target.with_host(original[0]).with_port(original[1])
        await _answer_expect_continue(request, headers)
        body = request.content if request.body_exists else None
        sent = await send(self._client(), request, url, headers, body)
        response = await relay(request, sent, outcome, trusted=False)
        self._record(request, "outbound", self.boot.service, target.host or "", outcome, start)
        return response

    async def _local_reply(
        self,
        request: web.BaseRequest,
        direction: Direction,
        destination: str,
        status: int,
        code: str,
        message: str,
    ) -> web.StreamResponse:
        start = time.perf_counter()
        response = await reply(request, status, code, message)
        outcome = Outcome(status=status, error=code)
        self._record(request, direction, self.boot.service, destination, outcome, start)
        return response

    def _record(
        self,
        request: web.BaseRequest,
        direction: Direction,
        source: str,
        destination: str,
        outcome: Outcome,
        start: float,
    ) -> None:
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
                trace_id=outcome.trace_id,
            )
        )


def _target(request: web.BaseRequest) -> URL:
    """Where the caller asked to go: the absolute-form target, else ``Host`` (RFC 9112 3.2.2)."""
    raw = request.raw_path  # the request-target as sent
    if raw[:7].lower() == "http://":
        return URL(raw, encoded=True)
    return URL.build(scheme="http", authority=request.host).join(request.rel_url)


async def _answer_expect_continue(request: web.BaseRequest, headers: CIMultiDict[str]) -> None:
    """As Envoy does by default: answer "100 Continue" here and do not pass the
    expectation on (an upstream that never answers it would leave the client
    library waiting for a 100 that does not come). Once per request."""
    headers.popall("Expect", None)
    if request.body_exists and _expects_continue(request):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


MAX_BODY = 64 * 1024 * 1024
"""The largest request body a sidecar passes on (by its Content-Length)."""


def _too_big(request: web.BaseRequest) -> NoAnswer | None:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return NoAnswer(
            "body-too-large",
            f"the request body ({length} bytes) is over the mesh's limit of {MAX_BODY} bytes",
            status=413,
        )
    return None


def _expects_continue(request: web.BaseRequest) -> bool:
    return (
        request.version >= aiohttp.HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    )
