"""Commands that look at a running mesh: status, logs, trace, certs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from devmesh import payloads
from devmesh.cli.app import app, call_api, context
from devmesh.cli.live import WINDOW_HELP, check_window, watch
from devmesh.cli.output import (
    certs_table,
    console,
    print_json,
    status_group,
    status_tables,
    trace_table,
)
from devmesh.config.report import did_you_mean
from devmesh.controlplane.mesh import GATEWAY_INSTANCE
from devmesh.errors import UsageError
from devmesh.plan import plan_instances
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.labels import Role
from devmesh.runtime.docker.logs import ContainerLogs, read_all
from devmesh.runtime.logs import LineSource, LogFollower
from devmesh.runtime.processes import RuntimeRecord, tail
from devmesh.tracetree import trace_tree


@app.command()
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    window: Annotated[int, typer.Option("--window", help=WINDOW_HELP)] = 10,
    watch_it: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh each second until Ctrl-C.")
    ] = False,
) -> None:
    """Show services, instances and the traffic between them."""
    check_window(window)
    workspace = context(ctx).workspace
    if watch_it and not json_out:
        watch(workspace, window, status_group)
        return
    data = asyncio.run(call_api(workspace, lambda c: c.status(window)))
    if json_out:
        print_json(data)
        return
    for table in status_tables(data):
        console.print(table)


@app.command()
def trace(
    ctx: typer.Context,
    trace_id: Annotated[
        str | None,
        typer.Argument(help="A trace id (or its start), as `devmesh tap` prints it."),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="Only traces through this service.")
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only traces with a failure.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many of the latest traces.")] = 20,
    otlp: Annotated[
        Path | None,
        typer.Option("--otlp", help="Write the trace(s) to this file as OTLP/JSON."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one request's path across services, hop by hop, or list the latest traces."""
    if trace_id is not None and not _is_hex(trace_id):
        raise UsageError(
            f"{trace_id!r} is not a trace id (hexadecimal digits)",
            "copy one from `devmesh tap` or `devmesh trace`",
        )
    if limit < 1:
        raise UsageError(f"--limit {limit} must be 1 or more", "e.g. --limit 20")
    if otlp is not None and (trace_id is not None) and (service or failed):
        raise UsageError("--service and --failed choose among traces; give them without an id")
    workspace = context(ctx).workspace
    if otlp is not None:
        data = asyncio.run(call_api(workspace, lambda c: c.otlp(trace_id, limit, service, failed)))
        _write_otlp(otlp, data)
        spans = sum(
            len(scope["spans"]) for rs in data["resourceSpans"] for scope in rs["scopeSpans"]
        )
        console.print(f"wrote {spans} spans to {otlp} (OTLP/JSON)")
    elif trace_id is not None:
        one = asyncio.run(call_api(workspace, lambda c: c.trace(trace_id)))
        if json_out:
            print_json(one)
        else:
            console.print(trace_tree(one))
    else:
        latest = asyncio.run(call_api(workspace, lambda c: c.traces(limit, service, failed)))
        if json_out:
            print_json({"traces": latest})
        else:
            console.print(trace_table(latest))


def _is_hex(text: str) -> bool:
    return 0 < len(text) <= 32 and all(c in "0123456789abcdefABCDEF" for c in text)


def _write_otlp(path: Path, data: payloads.Otlp) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(
            f"cannot write {path}: {exc.strerror}", "give a path in a folder you can write to"
        ) from None


@app.command()
def certs(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List each service's identity: its SPIFFE ID, certificate fingerprint and expiry."""
    data = asyncio.run(call_api(context(ctx).workspace, lambda c: c.certs()))
    if json_out:
        print_json(data)
        return
    console.print(certs_table(data))


@app.command()
def logs(
    ctx: typer.Context,
    service: Annotated[
        str,
        typer.Argument(
            help="A service, one instance of it (catalog-v1-1), or ingress (the gateway)."
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    sidecar: Annotated[
        bool, typer.Option("--sidecar", help="Show the sidecars' logs instead.")
    ] = False,
    lines: Annotated[int, typer.Option("--tail", "-n", help="How many past lines to show.")] = 100,
) -> None:
    """Print the logs of a service's instances (or of their sidecars)."""
    app_ctx = context(ctx)
    workspace = app_ctx.workspace
    project = app_ctx.load()
    gateway = service == GATEWAY_INSTANCE
    instances = [GATEWAY_INSTANCE] if gateway else _instances_of(project, service)
    role: Role = "gateway" if gateway else "sidecar" if sidecar else "service"
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is not None and record.runtime == "docker":
        names = {i: labels.container_name(project.name, i, role) for i in instances}
        _container_logs(names, lines, follow)
        return
    files = {i: workspace.log_file(i, sidecar=role == "sidecar") for i in instances}
    if not any(path.exists() for path in files.values()):
        raise UsageError(f"there are no logs for {service} yet", "start the mesh with `devmesh up`")
    prefix = len(files) > 1
    width = max(len(name) for name in files)
    for name, path in files.items():
        for line in tail(path, lines):
            _print_line(name, line, width if prefix else 0)
    if follow:
        _follow(files, width if prefix else 0)


def _container_logs(names: dict[str, str], lines: int, follow: bool) -> None:
    width = max(len(name) for name in names) if len(names) > 1 else 0
    client = connect()
    try:
        if not follow:
            for name, line in read_all(client, names, lines):
                _print_line(name, line, width)
            return
        stream = ContainerLogs(client, names, tail=lines)
        _pump(stream, width, stream.done)
    finally:
        client.close()


def _instances_of(project: Any, name: str) -> list[str]:
    specs = plan_instances(project)
    matching = [s.id for s in specs if s.service == name] or [s.id for s in specs if s.id == name]
    if not matching:
        choices = list(project.services) + [s.id for s in specs]
        raise UsageError(
            f"there is no service or instance named {name!r}",
            did_you_mean(name, choices, f"services: {', '.join(project.services)}"),
        )
    return matching


def _print_line(name: str, line: str, width: int) -> None:
    if width:
        console.print(Text(f"{name:<{width}} | ", style="cyan") + Text(line))
    else:
        console.print(Text(line))


def _follow(files: dict[str, Path], width: int) -> None:
    _pump(LogFollower(files, from_end=True), width)


def _pump(source: LineSource, width: int, done: Callable[[], bool] = lambda: False) -> None:
    """Print what ``source`` has, until Ctrl-C (or until ``done``), then close it."""
    try:
        while True:
            finished = done()
            for name, line in source.poll():
                _print_line(name, line, width)
            if finished:
                return
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
