"""Header rewriting for one hop through the mesh. Pure functions, no I/O.

RFC 9110 §7.6.1: a proxy removes the hop-by-hop headers, and every header the
``Connection`` header names, before forwarding in either direction.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

SOURCE_HEADER = "x-devmesh-source"
"""Set by the calling sidecar: the service the request comes from."""
ERROR_HEADER = "x-devmesh-error"
"""Set on a response the mesh made itself (no endpoint, connect failure, ...)."""
FAULT_HEADER = "x-devmesh-fault"
"""Set on a response a fault shaped (the ids of the faults): injected, not real."""
DENIED_HEADER = "x-devmesh-denied"
"""Set on a 403 an authorization policy made: why the request was denied."""
VERSION_HEADER = "x-devmesh-version"
"""Sent by a caller to pin one request to a version of the destination (``v2``)."""
MESH_PREFIX = "x-devmesh-"


Headers = CIMultiDict[str] | CIMultiDictProxy[str]


def _connection_tokens(headers: Headers) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def forwardable(headers: Headers, *, drop_mesh: bool = False) -> CIMultiDict[str]:
    """A copy of ``headers`` fit to forward: hop-by-hop headers removed.

    With ``drop_mesh``, the ``x-devmesh-*`` headers are removed too, so that an
    application cannot forge what the mesh asserts (its source identity).
    """
    drop = HOP_BY_HOP | _connection_tokens(headers) if "connection" in headers else HOP_BY_HOP
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in drop or (drop_mesh and lower.startswith(MESH_PREFIX)):
            continue
        out.add(name, value)
    return out


def append_forwarded_for(headers: CIMultiDict[str], peer: str | None) -> None:
    """Append one entry (the peer's address) to ``X-Forwarded-For``."""
    if not peer:
        return
    existing = ", ".join(headers.getall("x-forwarded-for", ()))
    headers.popall("x-forwarded-for", None)
    headers["X-Forwarded-For"] = f"{existing}, {peer}" if existing else peer


def without(headers: CIMultiDict[str], names: Iterable[str]) -> CIMultiDict[str]:
    for name in names:
        headers.popall(name, None)
    return headers


TRACEPARENT = "traceparent"
REQUEST_ID = "x-request-id"
_HEX = frozenset("0123456789abcdef")
_random_bits = random.getrandbits
"""Trace, span and request ids need to be unique, not secret (as OpenTelemetry's SDKs
make them): the fast generator, no system call per request."""


@dataclass(frozen=True, slots=True)
class Span:
    """This hop's place in the request's W3C trace."""

    trace_id: str
    span_id: str
    parent_id: str | None
    """The span of the caller (``None``: this hop started the trace)."""


def trace_hop(headers: CIMultiDict[str]) -> Span:
    """Make this hop a span of the request's W3C trace, and its id the next hop's parent.

    A valid ``traceparent`` keeps its trace id and flags and gets this hop's new
    span id as parent; an absent or malformed one starts a trace. An
    ``x-request-id`` is kept, or one is started (a UUID 4).
    """
    found = _parse_traceparent(headers.get(TRACEPARENT, ""))
    span = f"{_random_bits(64) or 1:016x}"
    parent = None
    if found is not None:
        trace, parent, flags = found
    else:
        trace, flags = f"{_random_bits(128) or 1:032x}", "01"
    headers.popall(TRACEPARENT, None)
    headers[TRACEPARENT] = f"00-{trace}-{span}-{flags}"
    if not headers.get(REQUEST_ID):
        headers[REQUEST_ID] = _uuid4()
    return Span(trace, span, parent)


def _parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """``(trace id, parent id, flags)`` of a valid version-00-shaped ``traceparent``."""
    parts = value.strip().lower().split("-")
    if len(parts) != 4:
        return None
    version, trace, parent, flags = parts
    if (len(version), len(trace), len(parent), len(flags)) != (2, 32, 16, 2):
        return None
    if not _HEX.issuperset(version + trace + parent + flags) or version == "ff":
        return None
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace, parent, flags


def _uuid4() -> str:
    """A random UUID (version 4, RFC 4122 variant), as ``uuid.uuid4()`` makes, without
    its system call."""
    value = (_random_bits(128) & ~(0xC000 << 48 | 0xF000 << 64)) | (0x8000 << 48 | 0x4000 << 64)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def header_safe(text: str, limit: int = 512) -> str:
    """``text`` fit for a header value: printable ASCII only (a request's decoded path may
    hold anything, line breaks included), at most ``limit`` characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
