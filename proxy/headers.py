"""Header rewriting for one hop through the mesh. Pure functions, no I/O.

RFC 9110 §7.6.1: a proxy removes the hop-by-hop headers, and every header the
``Connection`` header names, before forwarding in either direction.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable

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
    drop = HOP_BY_HOP | _connection_tokens(headers)
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
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def trace_hop(headers: CIMultiDict[str]) -> str:
    """Make this hop a span of the request's W3C trace; the trace id (started if absent).

    A valid ``traceparent`` keeps its trace id and flags and gets this hop's new
    span id as parent; an absent or malformed one starts a trace. An
    ``x-request-id`` is kept, or one is started.
    """
    found = _TRACEPARENT.match(headers.get(TRACEPARENT, "").strip().lower())
    span = secrets.token_hex(8)
    if found is not None and found.group(1) != "ff" and set(found.group(2)) != {"0"}:
        trace, flags = found.group(2), found.group(4)
    else:
        trace, flags = secrets.token_hex(16), "01"
    headers.popall(TRACEPARENT, None)
    headers[TRACEPARENT] = f"00-{trace}-{span}-{flags}"
    if not headers.get(REQUEST_ID):
        headers[REQUEST_ID] = str(uuid.uuid4())
    return trace
