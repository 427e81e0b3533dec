"""Faults as a user writes them (``devmesh fault add``'s flags, or the TUI's fault editor)
turned into devmesh.yaml's shape, and described back in a few words (the control plane's
``does`` and ``matches``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from devmesh.errors import UsageError
from devmesh.forms.fields import FLAGS, Names, duration, given, percentage, seconds
from devmesh.units import format_size, parse_size

KINDS = ("delay", "abort", "bandwidth", "hang")
"""What a fault can do; ``abort`` is an HTTP status or ``reset``."""
KEYS = (*KINDS, "jitter", "percent", "path", "method", "header", "source", "for")
"""Every field of a fault, as ``fault_from_fields`` reads them (``for``: ``lasts``)."""


def fault_from_fields(
    fields: Mapping[str, str | None], headers: Sequence[str] = (), names: Names = FLAGS
) -> dict[str, Any]:
    """The fault the fields describe, in devmesh.yaml's shape; ``UsageError`` naming the field.

    ``fields`` holds text as typed, by key of ``KEYS`` (missing or empty: not given);
    ``abort`` is a status (``503``) or ``reset``; ``headers`` are ``NAME=VALUE``.
    """
    value = {key: given(fields.get(key)) for key in KEYS}
    percent = percentage(value["percent"], "percent", names)
    share = 100.0 if percent is None else percent
    if value["jitter"] is not None and value["delay"] is None:
        raise UsageError(
            f"{names.name('jitter')} goes with {names.name('delay')}",
            f"{names.example('delay', '200ms')} {names.name('jitter')} 50ms",
        )
    fault: dict[str, Any] = {}
    if value["delay"] is not None:
        fault["delay"] = {"fixed": duration(value["delay"], "delay", names), "percent": share}
        if value["jitter"] is not None:
            jitter = duration(value["jitter"], "jitter", names, zero=True, example="50ms")
            fault["delay"]["jitter"] = jitter
    if value["abort"] is not None:
        fault["abort"] = {**_abort(value["abort"], names), "percent": share}
    if value["bandwidth"] is not None:
        fault["bandwidth"] = _bandwidth(value["bandwidth"], names)
    if value["hang"] is not None:
        fault["hang"] = duration(value["hang"], "hang", names, example="10s")
    if not fault:
        kinds = [names.name(kind) for kind in KINDS]
        if names.labels is None:  # flags: a reset is a flag of its own
            kinds[KINDS.index("abort")] = "--abort, --reset"
        raise UsageError("the fault does nothing", f"give {', '.join(kinds[:-1])} or {kinds[-1]}")
    match = _match(value, [*headers, *([value["header"]] if value["header"] else [])], names)
    if match:
        fault["match"] = match
    return fault


def lasts(value: str | None, names: Names = FLAGS) -> float | None:
    """How long the fault lasts, in seconds (``None``: until removed)."""
    return seconds(value, "for", names)


def _abort(text: str, names: Names) -> dict[str, Any]:
    if text.lower() == "reset":
        return {"reset": True}
    if not text.isdigit() or not 200 <= int(text) <= 599:
        raise UsageError(
            f"{names.name('abort')} must be an HTTP status from 200 to 599, not {text}",
            names.example("abort", "503"),
        )
    return {"http_status": int(text)}


def _bandwidth(text: str, names: Names) -> str:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise UsageError(
            f"{names.name('bandwidth')}: {exc}",
            names.example("bandwidth", "64kB") + " (per second)",
        ) from None
    if size <= 0:
        raise UsageError(
            f"{names.name('bandwidth')} must be more than 0", names.example("bandwidth", "64kB")
        )
    return format_size(size)


def _match(value: Mapping[str, str | None], headers: Sequence[str], names: Names) -> dict[str, Any]:
    match: dict[str, Any] = {}
    path = value["path"]
    if path is not None:
        if not path.startswith("/"):
            raise UsageError(
                f"{names.name('path')} must start with '/', not {path!r}",
                names.example("path", f"/{path}"),
            )
        match["path"] = path
    if value["method"] is not None:
        match["method"] = value["method"].upper()
    found: dict[str, str] = {}
    for item in headers:
        name, sep, wanted = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"{names.name('header')} {item!r} is not NAME=VALUE",
                names.example("header", "x-debug=1"),
            )
        found[name.strip()] = wanted
    if found:
        match["headers"] = found
    if value["source"] is not None:
        match["source"] = value["source"]
    return match


def describe(fault: Mapping[str, Any]) -> str:
    """``abort 503 (20%), delay 200ms ±50ms`` — what a fault does, in a few words."""
    parts = []
    delay = fault.get("delay")
    if delay:
        text = f"delay {delay['fixed']}" + (f" ±{delay['jitter']}" if delay.get("jitter") else "")
        parts.append(text + _share(delay))
    abort = fault.get("abort")
    if abort:
        what = "reset" if abort.get("reset") else f"abort {abort.get('http_status')}"
        parts.append(what + _share(abort))
    if fault.get("bandwidth"):
        parts.append(f"bandwidth {fault['bandwidth']}/s")
    if fault.get("hang"):
        parts.append(f"hang {fault['hang']}")
    return ", ".join(parts)


def _share(part: Mapping[str, Any]) -> str:
    percent = part.get("percent", 100)
    return "" if percent == 100 else f" ({percent:g}%)"


def describe_match(fault: Mapping[str, Any]) -> str:
    """``GET /items* x-debug=1 from frontend``, or ``every request``."""
    match = fault.get("match") or {}
    parts = []
    if match.get("method"):
        parts.append(match["method"])
    if match.get("path"):
        parts.append(f"{match['path']}*")
    for name, value in (match.get("headers") or {}).items():
        parts.append(f"{name}={value}")
    if match.get("source"):
        parts.append(f"from {match['source']}")
    return " ".join(parts) or "every request"
