"""``devmesh fault add | ls | rm | reset``: inject faults into calls to a service, live.

Flags map to a fault in devmesh.yaml's shape (Istio's): the control plane
validates it with the same code as the config, applies it to every caller's
sidecar, keeps it across restarts, and removes a time-boxed one by itself.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from devmesh.cli.app import app, call_api, context
from devmesh.cli.layout import Listing
from devmesh.cli.output import console, print_json
from devmesh.errors import UsageError
from devmesh.forms.faults import fault_from_fields
from devmesh.forms.faults import lasts as lasts_of
from devmesh.statetext import expires_text, origin_text
from devmesh.units import format_duration

fault_app = typer.Typer(
    help="Inject faults (delays, errors, resets, slow or hung responses) into calls to a "
    "service, list them, remove them.",
    no_args_is_help=True,
)
app.add_typer(fault_app, name="fault")


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
    if abort is not None and reset:
        raise UsageError("give --abort STATUS or --reset, not both", "e.g. --abort 503")
    fault = fault_from_fields(
        {
            "delay": delay,
            "jitter": jitter,
            "abort": "reset" if reset else None if abort is None else str(abort),
            "percent": str(percent),
            "bandwidth": bandwidth,
            "hang": hang,
            "path": path,
            "method": method,
            "source": source,
        },
        headers=header or [],
    )
    seconds = lasts_of(lasts)
    added = asyncio.run(
        call_api(context(ctx).workspace, lambda c: c.add_fault(service, fault, seconds))
    )
    if json_out:
        print_json(added)
        return
    until = f", for {format_duration(seconds)}" if seconds is not None else ""
    console.print(
        f"added fault {added['id']} on calls to {service}: {added['does']} "
        f"on {added['matches']}{until}"
    )


@fault_app.command("ls")
def list_faults(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the faults as JSON.")] = False,
) -> None:
    """List the faults in force: the runtime ones and those in devmesh.yaml."""
    faults = asyncio.run(call_api(context(ctx).workspace, lambda c: c.faults()))
    if json_out:
        print_json({"faults": faults})
        return
    if not faults:
        console.print("no faults")
        return
    table = Listing()
    for column in ("ID", "SERVICE", "FAULT", "MATCH", "EXPIRES", "FROM"):
        table.add_column(column)
    for fault in faults:
        table.add_row(
            fault["id"],
            fault["service"],
            Text(fault["does"]),
            Text(fault["matches"]),
            expires_text(fault["expires_in"]),
            origin_text(fault["origin"]),
        )
    console.print(table)


@fault_app.command("rm")
def remove(
    ctx: typer.Context,
    fault_id: Annotated[str, typer.Argument(metavar="ID", help="The fault's id (fault ls).")],
) -> None:
    """Remove one fault."""
    asyncio.run(call_api(context(ctx).workspace, lambda c: c.remove_fault(fault_id)))
    console.print(f"removed fault {fault_id}")


@fault_app.command("reset")
def reset_all(
    ctx: typer.Context,
    service: Annotated[
        str | None, typer.Argument(help="Only this service's faults (default: all).")
    ] = None,
) -> None:
    """Remove every fault added at run time (those in devmesh.yaml stay)."""
    removed = asyncio.run(call_api(context(ctx).workspace, lambda c: c.reset_faults(service)))
    count = len(removed)
    console.print(f"removed {count} fault{'s' if count != 1 else ''}")
