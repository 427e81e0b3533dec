"""Where a redirected connection was going before iptables sent it to the sidecar.

Linux keeps the original destination of a connection that a ``REDIRECT`` rule
rewrote; ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` returns it. A connection that
was not redirected (``HTTP_PROXY`` mode, the local runtime) has none.
"""

from __future__ import annotations

import asyncio
import socket
import struct

SO_ORIGINAL_DST = 80
"""From ``linux/netfilter_ipv4.h``; Python's socket module does not name it."""


def original_destination(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    """``(ip, port)`` the client connected to before redirection, or ``None``."""
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_INET:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:  # not redirected (ENOENT), or not Linux
        return None
    port, packed = struct.unpack("!2xH4s8x", raw)
    ip = socket.inet_ntoa(packed)
    local = sock.getsockname()
    if (ip, port) == (local[0], local[1]):
        return None  # conntrack knows the connection but nothing rewrote it
    return ip, port
