"""``devmesh doctor``: which runtime ``up`` would use and why, and what to fix before it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from devmesh.cli.app import app, context
from devmesh.cli.output import console, print_json
from devmesh.doctor import examine

MARKS = {"ok": ("✔", "green"), "info": ("•", "cyan"), "warn": ("!", "yellow"), "fail": ("✖", "red")}


@app.command()
def doctor(
    ctx: typer.Context,
    base_image: Annotated[
        str | None, typer.Option("--base-image", help="Check this base image instead.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check the config, the runtime, Docker, the images, the ports and the control plane."""
    app_ctx = context(ctx)
    project = app_ctx.load()
    findings = examine(project, app_ctx.config_path(), app_ctx.workspace, base_image)
    failed = [f for f in findings if f.outcome == "fail"]
    if json_out:
        print_json({"ok": not failed, "findings": [f.to_json() for f in findings]})
    else:
        width = max(len(f.check) for f in findings)
        for finding in findings:
            mark, style = MARKS[finding.outcome]
            line = Text(f"{mark} ", style=style) + Text(
                f"{finding.check:<{width}}  {finding.detail}"
            )
            console.print(line, soft_wrap=True)
            if finding.fix:
                console.print(
                    Text(f"  {'':<{width}}  fix: {finding.fix}", style="yellow"), soft_wrap=True
                )
        console.print(
            Text(f"{len(failed)} problem{'s' if len(failed) != 1 else ''} to fix", style="bold red")
            if failed
            else Text("nothing to fix", style="bold green")
        )
    if failed:
        raise typer.Exit(1)
