"""Commands that create, check, start and stop a mesh: init, validate, up, down."""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from devmesh.cli.app import app, context
from devmesh.cli.output import RichProgress, console, print_json
from devmesh.config import CONFIG_NAMES, load_project
from devmesh.config.loader import default_project_name
from devmesh.config.model import Project
from devmesh.errors import EXIT_USAGE, ConfigError, UsageError
from devmesh.plan import exposed, plan_instances
from devmesh.runtime.local import LocalRuntime, stop_recorded
from devmesh.runtime.logs import LogFollower
from devmesh.runtime.processes import RuntimeRecord, is_alive

STARTER = """\
# devmesh.yaml: the services of this project, each run with a sidecar.
# Reference: https://github.com/devmesh/devmesh#config-reference
name: {name}

services:
  web:
    # The local runtime runs the command with /bin/sh and sets $PORT.
    command: python3 -m http.server $PORT --bind 127.0.0.1
    port: 8000          # the port it listens on in a container
    expose: 8080        # reachable at http://127.0.0.1:8080 on this machine
    health:
      path: /
  # A service in two versions, reachable as http://api/ from the others:
  # api:
  #   port: 8000
  #   versions:
  #     v1: {{command: python3 api.py, env: {{API_VERSION: v1}}}}
  #     v2: {{command: python3 api.py, env: {{API_VERSION: v2}}}}

# policies:
#   api:
#     split: {{v1: 90, v2: 10}}
"""


class RuntimeChoice(enum.StrEnum):
    auto = "auto"
    local = "local"


@app.command()
def init(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option(help="Project name. Default: the folder's name.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing devmesh.yaml.")
    ] = False,
) -> None:
    """Write a starter devmesh.yaml in the project folder."""
    project_dir = context(ctx).project_dir
    path = project_dir / CONFIG_NAMES[0]
    existing = [project_dir / n for n in CONFIG_NAMES if (project_dir / n).exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists", "edit it, or pass --force to replace it")
    text = STARTER.format(name=name or default_project_name(path))
    project_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        project = load_project(path)
    except ConfigError:
        path.unlink()
        raise
    console.print(f"wrote {path} (project {project.name}); start it with `devmesh up`")


@app.command()
def validate(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Config file to check.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check devmesh.yaml and print every problem, with file:line and the fix."""
    path = file or context(ctx).config_path()
    try:
        project = load_project(path)
    except ConfigError as exc:
        if not json_out:
            raise
        print_json({"valid": False, "file": str(path), "problems": [str(p) for p in exc.problems]})
        raise typer.Exit(EXIT_USAGE) from None
    instances = len(plan_instances(project))
    if json_out:
        print_json(
            {
                "valid": True,
                "file": str(path),
                "project": project.name,
                "services": list(project.services),
                "instances": instances,
            }
        )
        return
    console.print(
        Text("✔ ", style="green")
        + Text(
            f"{path.name} is valid: project {project.name}, {len(project.services)} services, "
            f"{instances} instances"
        )
    )


@app.command()
def up(
    ctx: typer.Context,
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Return once the mesh is ready, leaving it running."),
    ] = False,
    runtime: Annotated[
        RuntimeChoice, typer.Option("--runtime", help="Where services run. auto = local for now.")
    ] = RuntimeChoice.auto,
) -> None:
    """Start every service with its sidecar, and the control plane; wait until all are ready."""
    app_ctx = context(ctx)
    project = app_ctx.load()
    workspace = app_ctx.workspace
    count = len(plan_instances(project))
    console.print(f"starting project {project.name}: {count} instances on the local runtime")
    local = LocalRuntime(project, workspace)
    with RichProgress() as progress:
        local.progress = progress
        asyncio.run(local.up())
        elapsed = progress.elapsed
    console.print(Text(f"ready in {elapsed:.1f}s", style="bold green"))
    _print_endpoints(project)
    if detach:
        console.print("stop it with `devmesh down`; see it with `devmesh status`")
        return
    _attach(local)


def _print_endpoints(project: Project) -> None:
    for service, port in exposed(project).items():
        console.print(f"  {service:<12} http://127.0.0.1:{port}")


def _attach(local: LocalRuntime) -> None:
    """Follow every instance's log until Ctrl-C, then stop the mesh (as compose up does).

    Returns by itself if the mesh is stopped from elsewhere (`devmesh down`).
    """
    workspace = local.ws
    record = RuntimeRecord.load(workspace.runtime_file)
    services = [p for p in (record.processes if record else []) if p.role == "service"]
    width = max((len(p.name) for p in services), default=8)
    follower = LogFollower({p.name: Path(p.log) for p in services}, from_end=False)
    console.print("following logs; Ctrl-C stops the mesh")
    exited: set[str] = set()
    try:
        while workspace.runtime_file.exists():
            for name, line in follower.poll():
                console.print(Text(f"{name:<{width}} | ", style="cyan") + Text(line))
            for process in services:
                if process.name not in exited and not is_alive(process):
                    exited.add(process.name)
                    console.print(Text(f"{process.name} stopped", style="red"))
            time.sleep(0.2)
        console.print("the mesh was stopped")
        return
    except KeyboardInterrupt:
        console.print("stopping the mesh")
    finally:
        follower.close()
    # A second Ctrl-C must not leave half the mesh running: stopping is bounded anyway.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stopped = local.down()
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print(f"stopped {len(stopped)} processes")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything devmesh started for this project (state and logs are kept)."""
    workspace = context(ctx).workspace
    record = RuntimeRecord.load(workspace.runtime_file)
    stopped = stop_recorded(workspace)
    if stopped:
        name = record.project if record else workspace.project_dir.name
        console.print(f"stopped {len(stopped)} processes of project {name}")
    else:
        console.print(f"nothing was running for {workspace.project_dir}")
