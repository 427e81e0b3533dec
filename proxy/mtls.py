"""mTLS between sidecars: what the inbound listener lets in, and the names certificates carry.

The inbound listener looks at the first byte of each new connection before it
reads anything (``MSG_PEEK``): ``0x16`` opens a TLS handshake, anything else is
plaintext HTTP. So one port serves both in ``permissive`` mode, and in
``strict`` mode a plaintext client is closed before a byte of it is read. A
TLS client must present a certificate from the mesh's CA, unexpired (the TLS
context checks both) and naming one SPIFFE ID of this project (checked here,
when the handshake ends and before the first read): otherwise the connection
is closed and nothing of it reaches the service.

The mode is read for each connection when it arrives, so a new mode applies to
new connections at once while open ones finish as they began.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("devmesh.proxy")

TLS_HANDSHAKE = 0x16
"""The first byte of a TLS record carrying a handshake (a ClientHello, first)."""
SNIFF_TIMEOUT = 10.0
"""A new connection that sends nothing for this long is closed (as a head's timeout)."""


@dataclass(frozen=True)
class Gate:
    """What the inbound listener applies to a connection arriving now."""

    mode: str
    """``strict``, ``permissive`` or ``off``."""
    server: ssl.SSLContext | None
    """This sidecar's identity, to present; ``None``: it has none yet (TLS is refused)."""
    trust_prefix: str | None
    """``spiffe://devmesh.local/<project>/``: the IDs a caller's certificate may name."""


class Refusals:
    """Connections the gate closed, counted by reason (``plaintext``, ``handshake``, ...)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, peer: object, detail: str) -> None:
        self.counts[reason] += 1
        log.info("refused a connection from %s: %s", _address(peer), detail)


def peer_spiffe_ids(transport: asyncio.BaseTransport) -> list[str]:
    """The SPIFFE IDs (URI SANs) of the certificate the peer presented."""
    cert = transport.get_extra_info("peercert")
    if not isinstance(cert, dict):
        return []
    names = cert.get("subjectAltName", ())
    return [value for kind, value in names if kind == "URI" and value.startswith("spiffe://")]


def peer_identity(transport: asyncio.BaseTransport, trust_prefix: str | None) -> str | None:
    """The caller's one SPIFFE ID if it is of this project, else ``None``."""
    ids = peer_spiffe_ids(transport)
    if trust_prefix is None or len(ids) != 1 or not ids[0].startswith(trust_prefix):
        return None
    service = ids[0][len(trust_prefix) :]
    return ids[0] if service and "/" not in service else None


def service_of(spiffe_id: str) -> str:
    """``frontend`` of ``spiffe://devmesh.local/shop/frontend``."""
    return spiffe_id.rpartition("/")[2]


MAX_ADMITTING = 512
"""Connections waiting for their first byte at once; more are closed (a client that opens
connections and sends nothing cannot use up the sidecar's file descriptors)."""
ACCEPT_PAUSE = 1.0
"""How long the listener waits before accepting again when the system is out of resources
(as asyncio's own servers do)."""
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


async def accept(
    server_sock: socket.socket,
    gate: Callable[[], Gate],
    protocol: Callable[[], asyncio.BaseProtocol],
    refusals: Refusals,
    admitting: set[asyncio.Task[None]],
) -> None:
    """Accept connections on ``server_sock`` until cancelled, each let in or closed by the
    gate; an error accepting one never stops the listener."""
    loop = asyncio.get_running_loop()
    while server_sock.fileno() != -1:
        try:
            conn, peer = await loop.sock_accept(server_sock)
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                log.error(
                    "cannot accept a connection (%s); accepting again in %gs",
                    os.strerror(exc.errno or 0),
                    ACCEPT_PAUSE,
                )
                await asyncio.sleep(ACCEPT_PAUSE)
            continue  # otherwise the peer gave up before it was accepted (ECONNABORTED)
        if len(admitting) >= MAX_ADMITTING:
            conn.close()
            refusals.add("busy", peer, f"{MAX_ADMITTING} connections wait for a first byte")
            continue
        task = loop.create_task(_admit(conn, peer, gate, protocol, refusals))
        admitting.add(task)
        task.add_done_callback(admitting.discard)


async def _admit(
    conn: socket.socket,
    peer: object,
    gate: Callable[[], Gate],
    protocol: Callable[[], asyncio.BaseProtocol],
    refusals: Refusals,
) -> None:
    """Let ``conn`` in (a transport takes it over) or close it, whatever happens."""
    loop = asyncio.get_running_loop()
    handed = False
    try:
        conn.setblocking(False)
        try:
            first = await _peek(loop, conn)
        except (OSError, TimeoutError) as exc:
            log.debug("a connection from %s ended before a byte: %s", _address(peer), exc)
            return
        if not first:
            return
        now = gate()
        tls = first[0] == TLS_HANDSHAKE
        if tls and (now.mode == "off" or now.server is None):
            why = "mTLS is off for this service" if now.mode == "off" else "no identity yet"
            refusals.add("tls-unavailable", peer, f"a TLS client, and {why}")
            return
        if not tls and now.mode == "strict":
            refusals.add("plaintext", peer, "a plaintext client, and this service is mTLS strict")
            return
        try:
            await loop.connect_accepted_socket(
                protocol,
                conn,
                ssl=now.server if tls else None,
                ssl_handshake_timeout=SNIFF_TIMEOUT if tls else None,
            )
            handed = True
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            refusals.add("handshake", peer, f"the TLS handshake failed: {_reason(exc)}")
    finally:
        if not handed:
            conn.close()


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The connection's first byte, left unread; ``b""`` if it closed first."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(SNIFF_TIMEOUT):
            await ready
    finally:
        loop.remove_reader(fd)
    return conn.recv(1, socket.MSG_PEEK)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
