"""The traffic graph (``g``): who calls whom, as trees from the services nobody calls
(the ingress, jobs), each edge with its rate and success rate, coloured by its errors
(green under 1 %, yellow under 5 %, red above), ``⚡`` where a fault is injected and the
breaker's state when it is not closed.

A service called from two places is drawn under each; below the first, its own calls
are not repeated (``…``). Services in a cycle with no way in are drawn from the first of
them, so every edge shows once at least."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

import devmesh.payloads as payloads
from devmesh.statetext import breaker_text
from tui import render


def edge_style(success: float | None) -> str:
    if success is None:
        return "dim"
    errors = 1.0 - success
    return "green" if errors < 0.01 else "yellow" if errors < 0.05 else "bold red"


def graph(status: payloads.Status) -> Text:
    """The mesh's edges as trees of text, one line per edge."""
    edges = status["edges"]
    if not edges:
        return Text("no traffic between services yet", style="dim")
    faulted = {f["service"] for f in status.get("faults", [])}
    calls: dict[str, list[payloads.Edge]] = {}
    called: set[str] = set()
    for edge in edges:
        calls.setdefault(edge["source"], []).append(edge)
        called.add(edge["destination"])
    for out in calls.values():
        out.sort(key=lambda e: -(e.get("rps") or 0.0))
    roots = sorted(source for source in calls if source not in called)
    drawn: set[str] = set()
    text = Text()

    def line(edge: payloads.Edge, prefix: str, last: bool) -> None:
        destination = edge["destination"]
        branch = "└─" if last else "├─"
        style = edge_style(edge.get("success_rate"))
        text.append(f"{prefix}{branch}", style="dim")
        text.append(f" {render.rps(edge.get('rps')).plain}/s ", style=style)
        text.append(render.percent(edge.get("success_rate")).plain, style=style)
        text.append(" ─▶ ", style=style)
        text.append(destination, style="bold")
        if destination in faulted:
            text.append(" ⚡ fault", style="bold magenta")
        breaker = edge.get("breaker")
        if breaker and breaker.get("state") not in (None, "closed"):
            text.append(" ")
            text.append_text(breaker_text(breaker))
        if destination in drawn and calls.get(destination):
            text.append("  … (its calls above)", style="dim")
        text.append("\n")

    def walk(node: str, prefix: str) -> None:
        drawn.add(node)
        out = calls.get(node, [])
        for index, edge in enumerate(out):
            last = index == len(out) - 1
            destination = edge["destination"]
            seen = destination in drawn
            line(edge, prefix, last)
            if not seen:
                walk(destination, prefix + ("   " if last else "│  "))

    def tree(root: str) -> None:
        text.append(root, style="bold cyan")
        text.append("\n")
        walk(root, "")
        text.append("\n")

    for root in roots:
        tree(root)
    for source in sorted(calls):  # what a cycle kept out of reach of every root
        if source not in drawn:
            tree(source)
    return text


class GraphScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Static("who calls whom: requests/s and success over the last 10 s", classes="caption")
        with VerticalScroll():
            yield Static(id="graph")
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "status", self.refresh_graph)

    def refresh_graph(self, status: payloads.Status | None) -> None:
        if status is not None:
            self.query_one("#graph", Static).update(graph(status))
