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

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.bootstrap import Bootstrap
from proxy.headers import (
    ERROR_HEADER,
    SOURCE_HEADER,
    append_forwarded_for,
    forwardable,
)
from proxy.origdst import original_destination
from proxy.router import NoEndpoint, Router
from proxy.snapshot import Endpoint
from proxy.telemetry import Direction, Record, TelemetryBuffer

log = logging.getLogger("devmesh.proxy")

GATEWAY_SOURCE = "ingress"
"""The source name of traffic that enters the mesh through the gateway."""
EXTERNAL_SOURCE = "external"
"""The source name of inbound traffic that did not come through a sidecar."""

# Headers aiohttp's client would add on its own; a proxy must not invent them.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CONNECT_TIMEOUT = 10.0
_MAX_PATH_IN_RECORD = 256

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class BoundPorts:
    inbound: int | None = None
    outbound: int | None = None
    gateway: dict[str, int] = field(default_factory=dict)


@dataclass
class _Outcome:
    """What happened to one forwarded request, for its telemetry record."""

    status: int = 0
    error: str | None = None
    instance: str = ""
    version: str = ""


@dataclass(frozen=True)
class _NoAnswer:
    """The upstream gave no response; the mesh answers 503 in its place."""

    code: str
    """``connect-failure`` (nothing was sent) or ``reset``."""
    message: str
    refused: bool = False
    """The connection was refused: nothing listens on the upstream's port."""


_Sent = aiohttp.ClientResponse | _NoAnswer


class Sidecar:
    """The data plane of one instance (or of the gateway)."""

    def __init__(
        self,
        boot: Bootstrap,
        router: Router,
        telemetry: TelemetryBuffer,
        on_app_refused: Callable[[str], None] = lambda detail: None,
    ) -> None:
        """``on_app_refused(detail)`` is called when the instance's app refuses a
        connection the inbound listener opens for a request (passive health)."""
        self.boot = boot
        self.router = router
        self.telemetry = telemetry
        self.on_app_refused = on_app_refused
        self.ports = BoundPorts()
        self._runners: list[web.BaseRunner] = []
        self._session: aiohttp.ClientSession | None = None

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
        outcome = _Outcome(instance=self.boot.instance, version=self.boot.version)
        if self.boot.app_port is None:
            response = await self._reply(
                request, 503, "no-port", f"{self.boot.service} declares no port to receive calls on"
            )
            outcome.status, outcome.error = 503, "no-port"
        else:
            headers = forwardable(request.headers)
            headers.popall(SOURCE_HEADER, None)
            url = URL(
                f"http://127.0.0.1:{self.boot.app_port}{request.url.raw_path_qs}", encoded=True
            )
            await _answer_expect_continue(request, headers)
            sent = await self._send(request, url, headers, self.boot.instance)
            if isinstance(sent, _NoAnswer) and sent.refused:
                self.on_app_refused(
                    f"connection refused on 127.0.0.1:{self.boot.app_port} by a request"
                )
            response = await self._relay(request, sent, outcome, trusted=False)
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
        outcome = _Outcome()
        endpoint = self.router.pick(service, version)
        if isinstance(endpoint, NoEndpoint):
            response = await self._reply(request, 503, "no-healthy-upstream", endpoint.reason)
            outcome.status, outcome.error = 503, "no-healthy-upstream"
        else:
            headers = forwardable(request.headers, drop_mesh=True)
            headers[SOURCE_HEADER] = source
            headers["Host"] = _target(request).raw_authority
            if source == GATEWAY_SOURCE:
                append_forwarded_for(headers, request.remote)
            await _answer_expect_continue(request, headers)
            resendable = _has_no_body(request)  # before the first try reads it
            sent = await self._send_to(request, endpoint, headers, outcome)
            if resendable and _never_reached_an_app(sent):
                other = self.router.pick_other(service, endpoint, version)
                if isinstance(other, Endpoint):
                    log.info(
                        "%s did not take %s %s for %s (connect-failure); trying %s",
                        endpoint.instance,
                        request.method,
                        request.path[:_MAX_PATH_IN_RECORD],
                        source,
                        other.instance,
                    )
                    await _discard(sent)
                    sent = await self._send_to(request, other, headers, outcome)
            response = await self._relay(request, sent, outcome, trusted=True)
        self._record(request, "outbound", source, service, outcome, start)
        return response

    async def _send_to(
        self,
        request: web.BaseRequest,
        endpoint: Endpoint,
        headers: CIMultiDict[str],
        outcome: _Outcome,
    ) -> _Sent:
        """Send ``request`` to ``endpoint``'s sidecar; ``outcome`` names the endpoint tried."""
        outcome.instance, outcome.version = endpoint.instance, endpoint.version
        url = URL(f"http://{endpoint.address}{request.url.raw_path_qs}", encoded=True)
        return await self._send(request, url, headers, endpoint.instance)

    async def _passthrough(self, request: web.BaseRequest, target: URL) -> web.StreamResponse:
        """A destination outside the mesh is called directly, as Istio's ALLOW_ANY does.

        A connection that iptables redirected here goes where it was going (its
        original destination), whatever its ``Host`` says.
        """
        start = time.perf_counter()
        outcome = _Outcome()
        headers = forwardable(request.headers, drop_mesh=True)
        headers["Host"] = target.raw_authority
        url = target
        original = original_destination(request.transport)
        if original is not None:
            url = target.with_host(original[0]).with_port(original[1])
        response = await self._forward(request, url, headers, outcome, trusted=False)
        self._record(request, "outbound", self.boot.service, target.host or "", outcome, start)
        return response

    # -- forwarding -----------------------------------------------------------

    async def _forward(
        self,
        request: web.BaseRequest,
        url: URL,
        headers: CIMultiDict[str],
        outcome: _Outcome,
        *,
        trusted: bool = True,
    ) -> web.StreamResponse:
        """Send ``request`` to ``url`` and stream the answer back (see ``_relay``)."""
        await _answer_expect_continue(request, headers)
        sent = await self._send(request, url, headers, outcome.instance)
        return await self._relay(request, sent, outcome, trusted=trusted)

    async def _send(
        self, request: web.BaseRequest, url: URL, headers: CIMultiDict[str], instance: str = ""
    ) -> _Sent:
        """Send ``request`` (streaming its body) to ``url``; the response head, or why none came.

        Nothing is written to the caller yet: the caller of ``_send`` may still try
        elsewhere (``_discard`` the answer first) or pass it on with ``_relay``.
        """
        assert self._session is not None, "Sidecar.start() was not called"
        try:
            return await self._session.request(
                request.method,
                url,
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        except aiohttp.ClientConnectorError as exc:
            where = f"{instance} at " if instance else ""
            return _NoAnswer(
                "connect-failure",
                f"upstream connect error: {where}{url.host}:{url.port}: "
                f"{exc.os_error.strerror or exc}",
                refused=exc.os_error.errno == errno.ECONNREFUSED,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _NoAnswer("reset", f"upstream reset before response: {type(exc).__name__}")

    async def _relay(
        self, request: web.BaseRequest, sent: _Sent, outcome: _Outcome, *, trusted: bool
    ) -> web.StreamResponse:
        """Stream the upstream's answer back to the caller, or the mesh's 503 if none came.

        ``trusted`` says the upstream is another sidecar, whose ``x-devmesh-*``
        response headers (a mesh-made error) pass on; an app's or an outside
        host's are removed so that they can never pass for the mesh's.
        """
        if isinstance(sent, _NoAnswer):
            outcome.status, outcome.error = 503, sent.code
            return await self._reply(request, 503, sent.code, sent.message)
        upstream = sent
        try:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=forwardable(upstream.headers, drop_mesh=not trusted),
            )
            outcome.status = upstream.status
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            # Writing to the caller failed: it went away. Caught first, because
            # aiohttp's ClientConnectionResetError is also a ClientError.
            outcome.error = "downstream-reset"
        except (aiohttp.ClientError, TimeoutError):
            # The upstream failed mid-body. Finishing the response normally
            # would hand the caller a truncated body that looks complete.
            outcome.error = "reset"
            if request.transport is not None:
                request.transport.abort()
        finally:
            upstream.release()
        return response

    async def _reply(
        self, request: web.BaseRequest, status: int, code: str, message: str
    ) -> web.StreamResponse:
        """A response the mesh makes itself, marked so that it is never taken for the app's."""
        response = web.Response(status=status, text=message + "\n", headers={ERROR_HEADER: code})
        await response.prepare(request)
        await response.write_eof()
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
        response = await self._reply(request, status, code, message)
        outcome = _Outcome(status=status, error=code)
        self._record(request, direction, self.boot.service, destination, outcome, start)
        return response

    def _record(
        self,
        request: web.BaseRequest,
        direction: Direction,
        source: str,
        destination: str,
        outcome: _Outcome,
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


def _has_no_body(request: web.BaseRequest) -> bool:
    """Whether the request can be sent again: it has no body, or one known to be empty
    (a chunked body that already ended without a byte)."""
    if not request.body_exists:
        return True
    content = request.content
    return content.at_eof() and content.total_bytes == 0


def _never_reached_an_app(sent: _Sent) -> bool:
    """Nothing was sent (the endpoint's sidecar refused the connection), or the endpoint's
    sidecar answered that it could not connect to its app (a trusted, mesh-made 503)."""
    if isinstance(sent, _NoAnswer):
        return sent.code == "connect-failure"
    return sent.status == 503 and sent.headers.get(ERROR_HEADER) == "connect-failure"


async def _discard(sent: _Sent) -> None:
    """Let go of an answer that will not be passed on, keeping its connection if it can be."""
    if isinstance(sent, _NoAnswer):
        return
    try:
        await sent.read()  # a sidecar's short error text; read whole, the connection is kept
    except (aiohttp.ClientError, TimeoutError):
        pass
    finally:
        sent.release()


def _expects_continue(request: web.BaseRequest) -> bool:
    return (
        request.version >= aiohttp.HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    )
