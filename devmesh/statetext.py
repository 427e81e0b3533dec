"""A state in words and colour, the same in the CLI's tables and the TUI: an HTTP status,
an instance's state, an edge's breaker and its security. Rich ``Text`` only (no I/O, no
terminal); ``short`` is the form for a narrow cell."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text

from devmesh import payloads
from devmesh.units import human_duration

STATUS_STYLE = {"2": "green", "3": "cyan", "4": "yellow", "5": "bold red"}
"""A status's style by its first digit (no status, or another: red)."""

STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "unhealthy": "red",
    "disconnected": "red",
    "stopped": "red",
}
"""An instance's state: green when it serves, yellow on its way, red when it does not."""

BREAKER_STYLE = {"closed": "green", "half-open": "yellow", "open": "bold red"}
BREAKER_RANK = {"closed": 0, "half-open": 1, "open": 2}
PANIC = "panic: routing to all"
"""What a breaker in panic does: its callers route to every instance, ejected ones too."""

SECURITY_STYLE = {"locked": "green", "mtls": "", "plaintext": "yellow"}


def clock_text(ts: float) -> str:
    """``12:00:01.123``: when a request ended, local time to the millisecond."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def expires_text(expires_in: float | None) -> str:
    """``in 1m 35s`` (``-``: until removed)."""
    return "-" if expires_in is None else f"in {human_duration(expires_in)}"


def origin_text(origin: str) -> str:
    """Where a fault or a rule comes from: ``devmesh.yaml``, or ``cli`` (added at run time,
    from the CLI or the TUI)."""
    return "devmesh.yaml" if origin == "config" else "cli"


def status_text(status: int) -> Text:
    """``503`` in its class's colour, ``---`` for none."""
    return Text(str(status or "---"), style=STATUS_STYLE.get(str(status)[:1], "red"))


def state_text(state: str) -> Text:
    """``ready`` in green, ``stopped`` in red."""
    return Text(state, style=STATE_STYLE.get(state, ""))


def breaker_text(breaker: payloads.Breaker | None, *, short: bool = False) -> Text:
    """``closed``, ``half-open``, or ``open (retry in 12s)`` (``open 12s`` when ``short``):
    red means open, everywhere; ``· panic: routing to all`` (``· panic``) when too few
    instances are healthy to leave any out."""
    if not breaker:
        return Text("-", style="dim")
    state = breaker.get("state") or "closed"
    text = breaker_state_text(state)
    retry_in = breaker.get("retry_in")
    if state == "open" and retry_in is not None:
        wait = human_duration(float(retry_in))
        text += Text(f" {wait}" if short else f" (retry in {wait})", style="red")
    if breaker.get("panic"):
        text += Text(" · panic" if short else f" · {PANIC}", style="yellow")
    return text


def breaker_state_text(state: str) -> Text:
    """``open`` in red, ``half-open`` in yellow, ``closed`` in green: a breaker's state alone
    (a breaker event's)."""
    return Text(state, style=BREAKER_STYLE.get(state, ""))


def worst_breaker(states: Sequence[payloads.Breaker | None]) -> payloads.Breaker | None:
    """The breaker that says most about a service: the most open, one in panic first."""
    found = [s for s in states if s]
    if not found:
        return None
    return max(
        found, key=lambda s: (BREAKER_RANK.get(str(s.get("state")), 0), bool(s.get("panic")))
    )


def security_text(security: payloads.EdgeSecurity | None, *, short: bool = False) -> Text:
    """An edge's mTLS as the control plane words it (``locked``: strict, ``mtls``,
    ``plaintext``; with its mode when not strict, or ``🔒`` when ``short``) and what
    authorization denied or audited on it."""
    if not security:
        return Text("-", style="dim")
    shown = str(security.get("shown") or "-")
    lock = "🔒 " if short and shown == "locked" else ""
    text = Text(lock + shown, style=SECURITY_STYLE.get(shown, ""))
    if not short and security.get("mode") and security["mode"] != "strict":
        text += Text(f" ({security['mode']})", style="dim")
    sep = " " if short else ", "
    if security.get("denied"):
        text += Text(f"{sep}{security['denied']} denied", style="red")
    if security.get("audited"):
        text += Text(f"{sep}{security['audited']} audited", style="yellow")
    return text
