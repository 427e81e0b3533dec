"""The typer application and what every command shares: the project folder, a call to its
control plane."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from devmesh import __version__
from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.config import find_config, load_project
from devmesh.config.compose import COMPOSE_NAMES, find_compose, load_compose
from devmesh.config.model import Project
from devmesh.errors import UsageError
from devmesh.workspace import Workspace

COMMAND_ORDER = (
    "init",
    "validate",
    "up",
    "down",
    "status",
    "tui",
    "top",
    "tap",
    "trace",
    "logs",
    "split",
    "fault",
    "policy",
    "mtls",
    "authz",
    "restart",
    "kill",
    "certs",
    "doctor",
)
"""The order of commands in ``--help``: the order a new user meets them."""


class _OrderedGroup(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        known = [name for name in COMMAND_ORDER if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


app = typer.Typer(
    cls=_OrderedGroup,
    name="devmesh",
    help="A local development service mesh: sidecars, a control plane and a live view.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass(frozen=True)
class AppContext:
    project_dir: Path

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.project_dir)

    def config_path(self) -> Path:
        """``devmesh.yaml``; in a folder without one, its docker-compose file."""
        try:
            return find_config(self.project_dir)
        except UsageError:
            compose = find_compose(self.project_dir)
            if compose is None:
                raise
            return compose

    def load(self, warn: Callable[[str], None] | None = None) -> Project:
        """The project; a compose file's warnings go to ``warn`` (``None``: not shown)."""
        path = self.config_path()
        if path.name not in COMPOSE_NAMES:
            return load_project(path)
        project, warnings = load_compose(path)
        if warn is not None:
            for warning in warnings:
                warn(warning)
        return project


def context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj


T = TypeVar("T")


async def call_api(workspace: Workspace, call: Callable[[ControlPlaneClient], Awaitable[T]]) -> T:
    """``call`` made on a client of the project's control plane: its answer, as the client's
    method types it (``call_api(workspace, lambda client: client.faults())``)."""
    async with ControlPlaneClient(Endpoint.of(workspace)) as client:
        return await call(client)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"devmesh {__version__}")
        raise typer.Exit()


@app.callback()
def callback(
    ctx: typer.Context,
    project_dir: Annotated[
        Path,
        typer.Option(
            "--project-dir",
            "-C",
            help="The project folder (with devmesh.yaml). Default: the current folder.",
            file_okay=False,
        ),
    ] = Path("."),
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = AppContext(project_dir.resolve())
