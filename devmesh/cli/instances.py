"""Commands that act on the instances of a running mesh: restart, kill."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from devmesh.cli.app import app, context
from devmesh.cli.output import console
from devmesh.config.model import Project
from devmesh.config.report import did_you_mean
from devmesh.errors import UsageError
from devmesh.plan import plan_instances
from devmesh.runtime.docker.runtime import DockerRuntime
from devmesh.runtime.local import LocalRuntime
from devmesh.runtime.processes import RuntimeRecord
from devmesh.workspace import Workspace


def running(project: Project, workspace: Workspace) -> LocalRuntime | DockerRuntime:
    """The runtime the project's mesh runs on; ``UsageError`` if none runs."""
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is None:
        raise UsageError(
            f"no mesh is running for {workspace.project_dir}", "start it with `devmesh up`"
        )
    if record.runtime == "docker":
        return DockerRuntime(project, workspace)
    return LocalRuntime(project, workspace)


@app.command()
def restart(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose instances to restart.")],
) -> None:
    """Restart a service's instances (their sidecars stay) and wait until they are ready."""
    app_ctx = context(ctx)
    project = app_ctx.load()
    if service not in project.services:
        raise UsageError(
            f"there is no service named {service!r}",
            did_you_mean(service, project.services, f"services: {', '.join(project.services)}"),
        )
    runner = running(project, app_ctx.workspace)
    done = asyncio.run(runner.restart(service, console.print))
    console.print(f"{service}: {len(done)} instance{'s' if len(done) != 1 else ''} ready")


@app.command()
def kill(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="The instance to kill, e.g. catalog-v1-1.")],
) -> None:
    """Kill one instance (SIGKILL), as a crash would: the mesh routes around it."""
    app_ctx = context(ctx)
    project = app_ctx.load()
    ids = [spec.id for spec in plan_instances(project)]
    if instance not in ids:
        hint = did_you_mean(instance, ids, f"instances: {', '.join(ids)}")
        if instance in project.services:
            hint = f"kill takes one instance of {instance}: " + ", ".join(
                i for i in ids if i.startswith(f"{instance}-")
            )
        raise UsageError(f"there is no instance named {instance!r}", hint)
    running(project, app_ctx.workspace).kill(instance)
    console.print(
        f"killed {instance}; its sidecar reports it down within seconds and the mesh "
        "routes around it (`devmesh restart` brings it back)"
    )
