"""The live tap (``t``): requests as they end, newest at the bottom; ``/`` filters,
``space`` pauses, ``enter`` opens a request's trace across services."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

import devmesh.payloads as payloads
from devmesh.errors import DevmeshError
from devmesh.forms.tap import Filters, filters_from_words
from devmesh.statetext import clock_text, status_text
from devmesh.tracetree import trace_tree
from tui import render
from tui.form import said
from tui.source import MeshSource

KEEP = 500
"""Rows the tap keeps; older ones scroll away."""


class TraceScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, source: MeshSource, trace_id: str) -> None:
        super().__init__()
        self.source = source
        self.trace_id = trace_id

    def compose(self) -> ComposeResult:
        yield Static(Text(f"trace {self.trace_id}: loading"), id="tree")
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(exclusive=True)
    async def _load(self) -> None:
        try:
            trace = await self.source.trace(self.trace_id)
        except DevmeshError as exc:
            self.query_one("#tree", Static).update(Text(exc.message, style="red"))
            return
        self.query_one("#tree", Static).update(trace_tree(trace))


class TapScreen(Screen[None]):
    AUTO_FOCUS = "#requests"
    CSS = """
    #filter { display: none; }
    #filter.shown { display: block; }
    #requests { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("space", "pause", "Pause"),
    ]

    def __init__(self, source: MeshSource, service: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.filters: Filters = {"service": service} if service else {}
        self.paused = False
        self.missed = 0

    def compose(self) -> ComposeResult:
        yield Static(id="caption", classes="caption")
        yield Input(placeholder="catalog 5xx /items >100ms (enter applies)", id="filter")
        yield DataTable(id="requests", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#requests", DataTable)
        table.add_columns("TIME", "EDGE", "REQUEST", "STATUS", "LATENCY", "VERSION", "TRACE")
        self._caption()
        self._follow()

    def _caption(self) -> None:
        words = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.filters.items() if v is not None)  # fmt: skip
        state = "paused" if self.paused else "live"
        missed = f", {self.missed} not shown (over 50 a second)" if self.missed else ""
        self.query_one("#caption", Static).update(
            Text(f"tap · {state} · {words or 'every request'}{missed}")
        )

    @work(exclusive=True, group="tap")
    async def _follow(self) -> None:
        table = self.query_one("#requests", DataTable)
        try:
            async for message in self.source.tap(**self.filters, rate=50):
                if message["type"] == "stats":
                    self.missed = int(message["sampled_out"]) + int(message["lost"])
                    self._caption()
                elif not self.paused:
                    table.add_row(*row_cells(message), key=f"{message['trace_id']}:{time.time()}")
                    if table.row_count > KEEP:
                        table.remove_row(next(iter(table.rows)))
                    table.move_cursor(row=table.row_count - 1)
        except DevmeshError as exc:
            self.notify(exc.message, title="tap ended", severity="error")

    def action_back(self) -> None:
        self.workers.cancel_group(self, "tap")
        self.app.pop_screen()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("shown")
        field.focus()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._caption()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.filters = filters_from_words(event.value)
        except DevmeshError as exc:
            self.notify(said(exc), title="filter not applied", severity="error")
            return
        event.input.remove_class("shown")
        self.query_one("#requests", DataTable).clear()
        self.query_one("#requests", DataTable).focus()
        self.missed = 0
        self._caption()
        self._follow()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        trace = str(event.row_key.value).split(":")[0]
        if trace and trace != "None":
            self.app.push_screen(TraceScreen(self.source, trace))


def row_cells(record: payloads.TapRequest) -> tuple[Text, ...]:
    ts = float(record.get("ts") or time.time())
    status = int(record.get("status") or 0)
    shown = status_text(status)
    if record.get("fault"):
        shown += Text(" ⚡", style="bold magenta")
    return (
        Text(clock_text(ts)),
        Text(f"{record['source']} → {record['destination']}"),
        Text(f"{record['method']} {record['path']}"),
        shown,
        render.ms(record.get("latency_ms")),
        Text(record.get("version") or ""),
        Text((record.get("trace_id") or "")[:8]),
    )
