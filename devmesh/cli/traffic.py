"""Commands that change how traffic flows in a running mesh: split."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from devmesh import payloads
from devmesh.cli.app import app, context
from devmesh.cli.output import console, print_json
from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.errors import UsageError
from devmesh.forms.splits import parse_weights
from devmesh.workspace import Workspace


@app.command()
def split(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose traffic to split.")],
    weights: Annotated[
        list[str] | None, typer.Argument(help="VERSION=WEIGHT, summing to 100.")
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Go back to the split in devmesh.yaml.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Show or set how a service's traffic is split between its versions, live.

    The change is kept across control-plane restarts until `--clear`.
    """
    parsed = parse_weights(weights or [])
    if clear and parsed:
        raise UsageError("give weights or --clear, not both", "e.g. devmesh split catalog --clear")
    result = asyncio.run(_split(context(ctx).workspace, service, parsed, clear))
    if json_out:
        print_json(result)
        return
    current = result.get("split")
    shown = " ".join(f"{v}={w:g}" for v, w in current.items()) if current else "even (no split)"
    console.print(f"{service}: {shown}")


async def _split(
    workspace: Workspace, service: str, weights: dict[str, float], clear: bool
) -> payloads.SplitAnswer:
    async with ControlPlaneClient(Endpoint.of(workspace)) as client:
        if clear:
            return await client.clear_split(service)
        if weights:
            return await client.set_split(service, weights)
        status = await client.status()
    for entry in status["services"]:
        if entry["name"] == service:
            return {"service": service, "split": entry["split"]}
    raise UsageError(f"there is no service named {service!r}", "see `devmesh status`")
