"""Commands that create, check, start and stop a mesh: init, validate, up, down."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from devmesh.cli.app import app, context
from devmesh.cli.attach import attach
from devmesh.cli.live import open_tui
from devmesh.cli.output import RichProgress, console, print_json, print_warning
from devmesh.config import CONFIG_NAMES, load_project
from devmesh.config.compose import (
    COMPOSE_NAMES,
    compose_project,
    import_compose,
    load_compose,
    render_devmesh_yaml,
)
from devmesh.config.loader import default_project_name
from devmesh.config.model import Project
from devmesh.errors import EXIT_USAGE, ConfigError, UsageError
from devmesh.plan import exposed, plan_instances, url_of
from devmesh.runtime.choice import RuntimeName, choose
from devmesh.runtime.docker.runtime import DockerRuntime
from devmesh.runtime.docker.teardown import down as docker_down
from devmesh.runtime.local import LocalRuntime, stop_recorded
from devmesh.runtime.processes import RuntimeRecord, is_alive
from devmesh.workspace import Workspace

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


@app.command()
def init(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option(help="Project name. Default: the folder's name.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing devmesh.yaml.")
    ] = False,
    from_compose: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Convert this docker-compose file instead of writing a starter.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Write a starter devmesh.yaml in the project folder (or convert a compose file)."""
    project_dir = context(ctx).project_dir
    path = project_dir / CONFIG_NAMES[0]
    existing = [project_dir / n for n in CONFIG_NAMES if (project_dir / n).exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists", "edit it, or pass --force to replace it")
    if from_compose is not None:
        source = from_compose if from_compose.is_absolute() else project_dir / from_compose
        text = _from_compose(source, project_dir, name)
    else:
        text = STARTER.format(name=name or default_project_name(path))
    project_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        project = load_project(path)
    except ConfigError:
        path.unlink()
        raise
    console.print(f"wrote {path} (project {project.name}); start it with `devmesh up`")


def _from_compose(source: Path, project_dir: Path, name: str | None) -> str:
    """The devmesh.yaml text for a compose file, checked before anything is written."""
    if source.resolve().parent != project_dir:
        raise UsageError(
            f"{source} is not in the project folder {project_dir}",
            "run `devmesh init --from` in the folder of the compose file (or pass it with -C), "
            "so that build contexts keep their meaning",
        )
    imported = import_compose(source, default_name=name)
    if name is not None:
        imported = replace(imported, data={**imported.data, "name": name})
    compose_project(imported, source)
    for warning in imported.warnings:
        print_warning(warning)
    console.print(
        "note: values the compose file takes from the environment or .env are written "
        "into devmesh.yaml as they are now"
    )
    return render_devmesh_yaml(imported, source)


@app.command()
def validate(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Config file to check.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check devmesh.yaml and print every problem, with file:line and the fix."""
    path = file or context(ctx).config_path()
    try:
        if path.name in COMPOSE_NAMES:
            project, warnings = load_compose(path)
            for warning in warnings if not json_out else ():
                print_warning(warning)
        else:
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
        typer.Option(
            "--detach",
            "-d",
            help="Return once the mesh is ready, leaving it running (else: the live view in a "
            "terminal, the services' logs otherwise).",
        ),
    ] = False,
    runtime: Annotated[
        RuntimeName,
        typer.Option(
            "--runtime",
            help="Where services run: docker (containers), local (processes), or auto: docker "
            "when a daemon answers and every service has an image or build.",
        ),
    ] = RuntimeName.auto,
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image",
            help="The Python image the sidecar image is built on (docker runtime). "
            "Default: $DEVMESH_BASE_IMAGE, then base_image in devmesh.yaml, then python:3.12-slim.",
        ),
    ] = None,
) -> None:
    """Start every service with its sidecar, and the control plane; wait until all are ready."""
    app_ctx = context(ctx)
    project = app_ctx.load(warn=print_warning)
    workspace = app_ctx.workspace
    choice = choose(project, runtime, running_runtime(workspace))
    count = len(plan_instances(project))
    console.print(
        f"starting project {project.name}: {count} instances on the {choice.name} runtime "
        f"({choice.reason})"
    )
    runner = make_runtime(choice.name, project, workspace, base_image)
    with RichProgress() as progress:
        runner.progress = progress
        asyncio.run(runner.up())
        elapsed = progress.elapsed
    console.print(Text(f"ready in {elapsed:.1f}s", style="bold green"))
    _print_endpoints(project)
    if detach:
        console.print("stop it with `devmesh down`; see it with `devmesh status`")
        return
    if console.is_terminal:
        open_tui(workspace.project_dir)
        console.print(
            "the mesh is still running: `devmesh tui` opens the view again, `devmesh down` stops it"
        )
        return
    attach(runner)


def running_runtime(workspace: Workspace) -> str | None:
    """The runtime of the project's mesh, if its control plane runs."""
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is None or not any(is_alive(p) for p in record.processes):
        return None
    return record.runtime


def make_runtime(
    name: RuntimeName, project: Project, workspace: Workspace, base_image: str | None = None
) -> LocalRuntime | DockerRuntime:
    if name is RuntimeName.docker:
        return DockerRuntime(project, workspace, base_image=base_image)
    return LocalRuntime(project, workspace)


def _print_endpoints(project: Project) -> None:
    for service in exposed(project):
        console.print(f"  {service:<12} {url_of(project, service)}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything devmesh started for this project (state and logs are kept)."""
    workspace = context(ctx).workspace
    record = RuntimeRecord.load(workspace.runtime_file)
    name = record.project if record else workspace.project_dir.name
    if record is None or record.runtime == "docker":
        stopped = docker_down(workspace)
        what = "processes and containers"
    else:
        stopped = stop_recorded(workspace)
        what = "processes"
    if stopped:
        console.print(f"stopped {len(stopped)} {what} of project {name}")
    else:
        console.print(f"nothing was running for {workspace.project_dir}")
