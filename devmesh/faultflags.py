"""Faults as a user writes them (flags, or the TUI's form) turned into devmesh.yaml's shape,
and described back in a few words. Shared by ``devmesh fault`` and the TUI."""

from __future__ import annotations

from typing import Any

from devmesh.errors import UsageError
from devmesh.units import format_duration, format_size, parse_duration, parse_size


def parse_flag_duration(flag: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}", f"e.g. {flag} 200ms") from None
    if seconds <= 0 and flag != "--jitter":
        raise UsageError(f"{flag} must be more than 0, not {value}", f"e.g. {flag} 200ms")
    return format_duration(seconds)


def fault_from_flags(
    *,
    delay: str | None,
    jitter: str | None,
    abort: int | None,
    reset: bool,
    percent: float,
    bandwidth: str | None,
    hang: str | None,
    path: str | None,
    method: str | None,
    headers: list[str],
    source: str | None,
) -> dict[str, Any]:
    """The fault the flags describe, in devmesh.yaml's shape; ``UsageError`` naming the flag."""
    if not 0 <= percent <= 100:
        raise UsageError(f"--percent must be from 0 to 100, not {percent:g}", "e.g. --percent 20")
    if abort is not None and reset:
        raise UsageError("give --abort STATUS or --reset, not both", "e.g. --abort 503")
    if abort is not None and not 200 <= abort <= 599:
        raise UsageError(f"--abort must be an HTTP status from 200 to 599, not {abort}", "e.g. 503")
    if jitter is not None and delay is None:
        raise UsageError("--jitter goes with --delay", "e.g. --delay 200ms --jitter 50ms")
    fault: dict[str, Any] = {}
    if delay is not None:
        fault["delay"] = {"fixed": parse_flag_duration("--delay", delay), "percent": percent}
        if jitter is not None:
            fault["delay"]["jitter"] = parse_flag_duration("--jitter", jitter)
    if abort is not None:
        fault["abort"] = {"http_status": abort, "percent": percent}
    if reset:
        fault["abort"] = {"reset": True, "percent": percent}
    if bandwidth is not None:
        try:
            size = parse_size(bandwidth)
        except ValueError as exc:
            raise UsageError(f"--bandwidth: {exc}", "e.g. --bandwidth 64kB (per second)") from None
        if size <= 0:
            raise UsageError("--bandwidth must be more than 0", "e.g. --bandwidth 64kB")
        fault["bandwidth"] = format_size(size)
    if hang is not None:
        fault["hang"] = parse_flag_duration("--hang", hang)
    if not fault:
        raise UsageError(
            "the fault does nothing",
            "give --delay, --abort, --reset, --bandwidth or --hang",
        )
    match: dict[str, Any] = {}
    if path is not None:
        if not path.startswith("/"):
            raise UsageError(f"--path must start with '/', not {path!r}", f"e.g. --path /{path}")
        match["path"] = path
    if method is not None:
        match["method"] = method.upper()
    if headers:
        match["headers"] = _headers(headers)
    if source is not None:
        match["source"] = source
    if match:
        fault["match"] = match
    return fault


def _headers(items: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--header {item!r} is not NAME=VALUE", "e.g. --header x-debug=1")
        found[name.strip()] = value
    return found


def describe(fault: dict[str, Any]) -> str:
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


def _share(part: dict[str, Any]) -> str:
    percent = part.get("percent", 100)
    return "" if percent == 100 else f" ({percent:g}%)"


def describe_match(fault: dict[str, Any]) -> str:
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
