"""Talking to an upstream over HTTP: send a request, then relay its answer or the mesh's own.

``send`` returns the upstream's response head (or why none came) without writing
anything to the caller, so the caller may still try elsewhere (``discard`` the
answer first) or pass it on with ``relay``. ``reply`` makes a response of the
mesh's own, always marked so it is never taken for an app's.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Literal

from multidict import CIMultiDict

from proxy.body import BodyError
from proxy.headers import ERROR_HEADER, FAULT_HEADER, Span, forwardable, header_safe
from proxy.httpclient import (
    BodyBrokeOff,
    ConnectFailed,
    Pool,
    RequestBody,
    Response,
    Tls,
    UpstreamReset,
)
from proxy.httpserver import Request, ResponseError
from proxy.toxics import Throttle

UpstreamFailure = Literal["connect-failure", "reset", "timeout"]
"""The upstream failed to answer: it could not be reached, it broke the connection, or it
did not answer a request sent whole in time. Only these count against an endpoint."""
CallerFailure = Literal["downstream-reset", "body-timeout"]
"""The caller failed its own request: it went away (or its body broke off) before the
answer, or its body did not arrive whole in time."""
Refusal = Literal[
    "no-healthy-upstream",
    "breaker-open",
    "overflow",
    "no-identity",
    "body-too-large",
    "bad-path",
    "denied",
    "no-port",
    "loop",
    "app-restarting",
]
"""The mesh refused the request itself, before (or instead of) sending it."""
Code = UpstreamFailure | CallerFailure | Refusal


@dataclass(frozen=True)
class NoAnswer:
    """The upstream gave no response; the mesh answers in its place."""

    code: Code
    """Whose doing it was: the upstream's (``connect-failure``: nothing was sent; ``reset``,
    ``timeout``), the caller's (``downstream-reset``, ``body-timeout``), or the mesh's
    refusal (``no-healthy-upstream``, ``breaker-open``, ``overflow``...)."""
    message: str
    refused: bool = False
    """The connection was refused: nothing listens on the upstream's port."""
    status: int = 503
    fault: str | None = None
    """The injected fault that made it (a reset or a hang), if one did."""
    headers: dict[str, str] | None = None
    """More headers of the mesh's answer (why an authorization policy denied it)."""


@dataclass(frozen=True)
class Injected:
    """An abort a fault injected in place of the upstream's answer."""

    status: int
    fault: str


Sent = Response | NoAnswer | Injected


@dataclass
class Outcome:
    """What happened to one forwarded request, for its telemetry record."""

    status: int = 0
    error: str | None = None
    instance: str = ""
    version: str = ""
    fault: str | None = None
    """Ids of the injected faults that shaped the answer."""
    retries: int = 0
    span: Span | None = None
    """This hop's span of the request's trace."""
    mtls: bool = False
    """It went (outbound) or came (inbound) over mTLS."""
    authz: str | None = None
    """``deny:<policy>`` (denied), ``audit:<policy>`` (an audit-mode policy would have)."""


async def send(
    pool: Pool,
    request: Request,
    host: str,
    port: int,
    headers: CIMultiDict[str],
    body: RequestBody,
    instance: str = "",
    tls: Tls | None = None,
) -> Sent:
    """Send ``request`` (with ``body``: bytes to replay, or its stream) to ``host:port``
    (over mTLS with ``tls``)."""
    try:
        return await pool.request(
            host, port, request.method, request.path_qs, headers.items(), body, tls
        )
    except ConnectFailed as exc:
        where = f"{instance} at " if instance else ""
        return NoAnswer(
            "connect-failure",
            f"upstream connect error: {where}{host}:{port}: {exc.strerror or exc}",
            refused=exc.errno == errno.ECONNREFUSED,
        )
    except UpstreamReset as exc:
        return NoAnswer("reset", f"upstream reset before response: {exc}")
    except BodyBrokeOff as exc:
        return NoAnswer("downstream-reset", str(exc), status=0)


async def relay(
    request: Request,
    sent: Sent,
    outcome: Outcome,
    *,
    trusted: bool,
    throttle: Throttle | None = None,
) -> None:
    """Stream the upstream's answer back to the caller, or the mesh's own if none came.

    ``trusted`` says the upstream is another sidecar, whose ``x-devmesh-*``
    response headers (a mesh-made error) pass on; an app's or an outside
    host's are removed so that they can never pass for the mesh's.
    """
    if isinstance(sent, Injected):
        outcome.status = sent.status
        reply(
            request,
            sent.status,
            None,
            f"fault {sent.fault} injected by devmesh",
            {FAULT_HEADER: sent.fault},
        )
        return
    if isinstance(sent, NoAnswer):
        if sent.code == "downstream-reset":
            # The caller broke off its own request: there is no one to answer (and a
            # request that ended short cannot be answered as if whole).
            outcome.status, outcome.error = 0, sent.code
            request.abort()
            return
        outcome.status, outcome.error = sent.status, sent.code
        reply(request, sent.status, sent.code, sent.message, sent.headers)
        return
    upstream = sent
    body = upstream.body
    headers = forwardable(upstream.headers, drop_mesh=not trusted).items()
    outcome.status = upstream.status
    try:
        if body.complete and throttle is None:
            # The whole answer is here (most are): one write to the caller.
            request.respond(upstream.status, upstream.reason, headers, body.take())
        else:
            request.start(upstream.status, upstream.reason, headers, body.length)
            while chunk := await body.read():
                if throttle is not None:
                    await throttle.write(chunk, request.write)
                else:
                    await request.write(chunk)
            request.end()
    except ResponseError:
        outcome.error = "downstream-reset"
        request.abort()
    except BodyError:
        # The upstream failed mid-body. Finishing the response normally
        # would hand the caller a truncated body that looks complete.
        outcome.error = "reset"
        request.abort()
    finally:
        upstream.release()


async def discard(sent: Sent) -> None:
    """Let go of an answer that will not be passed on, keeping its connection if it can be."""
    if not isinstance(sent, Response):
        return
    try:
        if sent.body.length is not None and sent.body.length <= 64 * 1024:
            await sent.body.read_all()  # an error's short text; read whole, the connection is kept
    except BodyError:
        pass
    finally:
        sent.release()


def reply(
    request: Request,
    status: int,
    code: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """A response the mesh makes itself, marked so that it is never taken for the app's."""
    marks = [("Content-Type", "text/plain; charset=utf-8")]
    marks += [(name, header_safe(value)) for name, value in (headers or {}).items()]
    if code is not None:
        marks.append((ERROR_HEADER, code))
    try:
        request.respond(status, "", marks, (message + "\n").encode())
    except ResponseError:
        request.abort()
