"""Talking to an upstream over HTTP: send a request, then relay its answer or the mesh's own.

``send`` returns the upstream's response head (or why none came) without writing
anything to the caller, so the caller may still try elsewhere (``discard`` the
answer first) or pass it on with ``relay``. ``reply`` makes a response of the
mesh's own, always marked so it is never taken for an app's.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.headers import ERROR_HEADER, FAULT_HEADER, forwardable
from proxy.toxics import Throttle

# Headers aiohttp's client would add on its own; a proxy must not invent them.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@dataclass(frozen=True)
class NoAnswer:
    """The upstream gave no response; the mesh answers in its place."""

    code: str
    """``connect-failure`` (nothing was sent), ``reset``, ``timeout``, or what stopped the
    request before it was sent (``no-healthy-upstream``, ``breaker-open``, ``overflow``)."""
    message: str
    refused: bool = False
    """The connection was refused: nothing listens on the upstream's port."""
    status: int = 503
    fault: str | None = None
    """The injected fault that made it (a reset or a hang), if one did."""


@dataclass(frozen=True)
class Injected:
    """An abort a fault injected in place of the upstream's answer."""

    status: int
    fault: str


Sent = aiohttp.ClientResponse | NoAnswer | Injected


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
    trace_id: str | None = None
    response: web.StreamResponse | None = None
    """The caller's response once it has begun (prepared): it can no longer be replaced."""


async def send(
    session: aiohttp.ClientSession,
    request: web.BaseRequest,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes | aiohttp.StreamReader | None,
    instance: str = "",
) -> Sent:
    """Send ``request`` (with ``body``: bytes to replay, or its stream) to ``url``."""
    try:
        return await session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        )
    except aiohttp.ClientConnectorError as exc:
        where = f"{instance} at " if instance else ""
        return NoAnswer(
            "connect-failure",
            f"upstream connect error: {where}{url.host}:{url.port}: {exc.os_error.strerror or exc}",
            refused=exc.os_error.errno == errno.ECONNREFUSED,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return NoAnswer("reset", f"upstream reset before response: {type(exc).__name__}")


async def relay(
    request: web.BaseRequest,
    sent: Sent,
    outcome: Outcome,
    *,
    trusted: bool,
    throttle: Throttle | None = None,
) -> web.StreamResponse:
    """Stream the upstream's answer back to the caller, or the mesh's own if none came.

    ``trusted`` says the upstream is another sidecar, whose ``x-devmesh-*``
    response headers (a mesh-made error) pass on; an app's or an outside
    host's are removed so that they can never pass for the mesh's.
    """
    if isinstance(sent, Injected):
        outcome.status = sent.status
        return await reply(
            request,
            sent.status,
            None,
            f"fault {sent.fault} injected by devmesh",
            {FAULT_HEADER: sent.fault},
        )
    if isinstance(sent, NoAnswer):
        outcome.status, outcome.error = sent.status, sent.code
        return await reply(request, sent.status, sent.code, sent.message)
    upstream = sent
    try:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=forwardable(upstream.headers, drop_mesh=not trusted),
        )
        outcome.status = upstream.status
        await response.prepare(request)
        outcome.response = response
        async for chunk in upstream.content.iter_any():
            if throttle is not None:
                await throttle.write(chunk, response.write)
            else:
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


async def discard(sent: Sent) -> None:
    """Let go of an answer that will not be passed on, keeping its connection if it can be."""
    if not isinstance(sent, aiohttp.ClientResponse):
        return
    try:
        await sent.read()  # an error's short text; read whole, the connection is kept
    except (aiohttp.ClientError, TimeoutError):
        pass
    finally:
        sent.release()


async def reply(
    request: web.BaseRequest,
    status: int,
    code: str | None,
    message: str,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """A response the mesh makes itself, marked so that it is never taken for the app's."""
    marks = dict(headers or {})
    if code is not None:
        marks[ERROR_HEADER] = code
    response = web.Response(status=status, text=message + "\n", headers=marks)
    await response.prepare(request)
    await response.write_eof()
    return response
