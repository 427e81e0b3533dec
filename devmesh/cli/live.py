"""Commands that watch traffic as it happens: top and tap (and ``status --watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import typer

from devmesh import payloads
from devmesh.cli.app import app, call_api, context
from devmesh.cli.output import (
    LiveView,
    Renderable,
    console,
    print_json,
    tap_line,
    tap_missed,
    top_table,
)
from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.errors import UsageError
from devmesh.forms.tap import Filters, tap_filters
from devmesh.workspace import Workspace

WINDOW_HELP = "Rates over the last 1, 10 or 60 seconds."
SORTS: dict[str, Callable[[payloads.Edge], float]] = {
    "rps": lambda e: -e["rps"],
    "latency": lambda e: -(e["p99_ms"] or 0.0),
    "errors": lambda e: e["success_rate"] if e["success_rate"] is not None else 2.0,
}


def check_window(window: int) -> int:
    if window not in (1, 10, 60):
        raise UsageError(f"--window {window} is not 1, 10 or 60", "e.g. --window 10 (seconds)")
    return window


def watch(
    workspace: Workspace, window: int, render: Callable[[payloads.Status], Renderable]
) -> None:
    """Redraw ``render(status)`` each second from the event stream, until Ctrl-C."""

    async def run() -> None:
        async with ControlPlaneClient(Endpoint.of(workspace)) as client:
            with LiveView() as view:
                async for event in client.events(window):
                    if event["type"] == "status":
                        view.show(render(event))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@app.command()
def top(
    ctx: typer.Context,
    sort: Annotated[
        str, typer.Option("--sort", help="Order edges by rps, latency (p99) or errors.")
    ] = "rps",
    window: Annotated[int, typer.Option("--window", help=WINDOW_HELP)] = 10,
    once: Annotated[bool, typer.Option("--once", help="Print once instead of live.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the edges once, as JSON.")
    ] = False,
) -> None:
    """Show the busiest (or slowest, or failing) edges, refreshed each second."""
    if sort not in SORTS:
        raise UsageError(f"--sort {sort} is not one of {', '.join(SORTS)}", "e.g. --sort latency")
    check_window(window)
    workspace = context(ctx).workspace
    if once or json_out:
        status = asyncio.run(call_api(workspace, lambda c: c.status(window)))
        if json_out:
            print_json(sorted(status["edges"], key=SORTS[sort]))
        else:
            console.print(top_table(status, sorted(status["edges"], key=SORTS[sort]), sort))
        return
    watch(
        workspace,
        window,
        lambda status: top_table(status, sorted(status["edges"], key=SORTS[sort]), sort),
    )


# -- tap ----------------------------------------------------------------------------------


@app.command()
def tap(
    ctx: typer.Context,
    service: Annotated[
        str | None, typer.Argument(help="Only requests from or to this service.")
    ] = None,
    path: Annotated[str | None, typer.Option("--path", help="Only paths starting so.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (503) or class (5xx).")
    ] = None,
    min_latency: Annotated[
        str | None, typer.Option("--min-latency", help="Only requests slower than this (100ms).")
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Show at most this many requests a second.")
    ] = 100.0,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Stop after this many requests.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (requests and stats).")
    ] = False,
) -> None:
    """Print requests as they happen, one line each, until Ctrl-C.

    Under heavy traffic it samples: at most --rate requests a second are shown,
    and a line says how many were not.
    """
    workspace = context(ctx).workspace
    filters = _tap_filters(service, path, status, min_latency, rate, count)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tap(workspace, filters, count, json_out))


def _tap_filters(
    service: str | None,
    path: str | None,
    status: str | None,
    min_latency: str | None,
    rate: float,
    count: int | None,
) -> Filters:
    if count is not None and count <= 0:
        raise UsageError(f"--count {count} must be 1 or more", "e.g. --count 20")
    return tap_filters(
        service=service, path=path, status=status, min_latency=min_latency, rate=rate
    )


async def _tap(workspace: Workspace, filters: Filters, count: int | None, as_json: bool) -> None:
    async with (
        ControlPlaneClient(Endpoint.of(workspace)) as client,
        contextlib.aclosing(client.tap(**filters)) as stream,
    ):
        await _print_tap(stream, count, as_json)


async def _print_tap(
    stream: AsyncIterator[payloads.TapMessage], count: int | None, as_json: bool
) -> None:
    """One line per request (or JSON object), and a line for what was not shown."""
    shown = 0
    hidden = 0
    async for message in stream:
        if message["type"] == "request":
            shown += 1
            if as_json:
                sys.stdout.write(json.dumps(message) + "\n")
                sys.stdout.flush()
            else:
                console.print(tap_line(message), soft_wrap=True)
            if count is not None and shown >= count:
                return
        elif message["type"] == "stats":
            missed = message["sampled_out"] + message["lost"]
            if missed > hidden:
                if as_json:
                    sys.stdout.write(json.dumps(message) + "\n")
                else:
                    console.print(tap_missed(missed - hidden, message["rate"]))
                hidden = missed


# -- tui -----------------------------------------------------------------------------------


@app.command("tui")
def tui_command(ctx: typer.Context) -> None:
    """Open the live view of the running mesh (q leaves it; the mesh keeps running)."""
    app_ctx = context(ctx)
    Endpoint.of(app_ctx.workspace)  # no mesh runs: one sentence, before the screen changes
    code = open_tui(app_ctx.project_dir)
    if code != 0:
        raise typer.Exit(code)


def open_tui(project_dir: Path) -> int:
    """Run the TUI (``python -m tui``) on the project until it quits; its exit code.

    A program of its own, as the dependency direction says: the TUI uses devmesh's API
    client, and devmesh never imports the TUI.
    """
    argv = [sys.executable, "-m", "tui", "--project-dir", str(project_dir)]
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.run(argv, check=False).returncode
    return 130
