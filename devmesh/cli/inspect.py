"""Commands that look at a running mesh: status, logs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from devmesh.cli.app import app, context
from devmesh.cli.output import console, print_json, status_tables
from devmesh.client import ControlPlaneClient, Endpoint
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
from devmesh.workspace import Workspace


async def fetch_status(workspace: Workspace) -> dict[str, Any]:
    async with ControlPlaneClient(Endpoint.of(workspace)) as client:
        return await client.status()


@app.command()
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show services, instances and the traffic between them."""
    data = asyncio.run(fetch_status(context(ctx).workspace))
    if json_out:
        print_json(data)
        return
    for table in status_tables(data):
        console.print(table)


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
