"""``devmesh fault add | ls | rm | reset``: inject faults into calls to a service, live.

Flags map to a fault in devmesh.yaml's shape (Istio's): the control plane
validates it with the same code as the config, applies it to every caller's
sidecar, keeps it across restarts, and removes a time-boxed one by itself.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from devmesh.cli.app import app, context
from devmesh.cli.output import console, print_json
from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.errors import UsageError
from devmesh.units import format_duration, format_size, parse_duration, parse_size
from devmesh.workspace import Workspace

fault_app = typer.Typer(
    help="Inject faults (delays, errors, resets, slow or hung responses) into calls to a "
    "service, list them, remove them.",
    no_args_is_help=True,
)
app.add_typer(fault_app, name="fault")


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


async def call_api(workspace: Workspace, call: str, *args: Any) -> Any:
    async with ControlPlaneClient(Endpoint.of(workspace)) as client:
        return await getattr(client, call)(*args)


@fault_app.command("add")
def add(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose incoming calls fail.")],
    delay: Annotated[str | None, typer.Option(help="Delay each call, e.g. 200ms.")] = None,
    jitter: Annotated[str | None, typer.Option(help="Vary the delay by up to ±this.")] = None,
    abort: Annotated[int | None, typer.Option(help="Answer this HTTP status instead.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Reset the connection instead.")] = False,
    percent: Annotated[float, typer.Option(help="Share of matching calls, 0-100.")] = 100.0,
    bandwidth: Annotated[
        str | None, typer.Option(help="Limit the response to this many bytes/s, e.g. 64kB.")
    ] = None,
    hang: Annotated[str | None, typer.Option(help="Accept, never answer, for e.g. 10s.")] = None,
    path: Annotated[str | None, typer.Option(help="Only calls whose path starts so.")] = None,
    method: Annotated[str | None, typer.Option(help="Only calls with this method.")] = None,
    header: Annotated[
        list[str] | None, typer.Option(help="Only calls with this header, NAME=VALUE.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Only calls from this service.")] = None,
    lasts: Annotated[
        str | None, typer.Option("--for", help="Remove the fault by itself after e.g. 2m.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the fault as JSON.")] = False,
) -> None:
    """Add a fault on calls to SERVICE (from every caller, or those --source names)."""
    fault = fault_from_flags(
        delay=delay,
        jitter=jitter,
        abort=abort,
        reset=reset,
        percent=percent,
        bandwidth=bandwidth,
        hang=hang,
        path=path,
        method=method,
        headers=header or [],
        source=source,
    )
    seconds = parse_duration(parse_flag_duration("--for", lasts)) if lasts is not None else None
    added = asyncio.run(call_api(context(ctx).workspace, "add_fault", service, fault, seconds))
    if json_out:
        print_json(added)
        return
    until = f", for {format_duration(seconds)}" if seconds is not None else ""
    console.print(
        f"added fault {added['id']} on calls to {service}: {describe(added['fault'])} "
        f"on {describe_match(added['fault'])}{until}"
    )


@fault_app.command("ls")
def list_faults(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the faults as JSON.")] = False,
) -> None:
    """List the faults in force: the runtime ones and those in devmesh.yaml."""
    faults: list[dict[str, Any]] = asyncio.run(call_api(context(ctx).workspace, "faults"))
    if json_out:
        print_json({"faults": faults})
        return
    if not faults:
        console.print("no faults")
        return
    table = Table()
    for column in ("ID", "SERVICE", "FAULT", "MATCH", "EXPIRES", "FROM"):
        table.add_column(column)
    for fault in faults:
        expires = fault["expires_in"]
        table.add_row(
            fault["id"],
            fault["service"],
            describe(fault["fault"]),
            describe_match(fault["fault"]),
            "-" if expires is None else f"in {format_duration(round(expires, 1))}",
            "devmesh.yaml" if fault["origin"] == "config" else "cli",
        )
    console.print(table)


@fault_app.command("rm")
def remove(
    ctx: typer.Context,
    fault_id: Annotated[str, typer.Argument(metavar="ID", help="The fault's id (fault ls).")],
) -> None:
    """Remove one fault."""
    asyncio.run(call_api(context(ctx).workspace, "remove_fault", fault_id))
    console.print(f"removed fault {fault_id}")


@fault_app.command("reset")
def reset_all(
    ctx: typer.Context,
    service: Annotated[
        str | None, typer.Argument(help="Only this service's faults (default: all).")
    ] = None,
) -> None:
    """Remove every fault added at run time (those in devmesh.yaml stay)."""
    removed = asyncio.run(call_api(context(ctx).workspace, "reset_faults", service))
    count = len(removed)
    console.print(f"removed {count} fault{'s' if count != 1 else ''}")
