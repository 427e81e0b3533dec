"""The main view: every service (versions and split, instances up, rps, success rate,
p50/p99, the last minute of traffic, the breaker into it, its faults) and every edge,
redrawn with each status the app receives; the keys act on the service under the cursor,
and the bar on top says whether the control plane is there."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

import devmesh.payloads as payloads
from tui import render
from tui.access import AccessScreen
from tui.detail import DetailScreen
from tui.editors import FaultScreen, SplitScreen
from tui.graph import GraphScreen
from tui.policy import PolicyScreen
from tui.source import MeshSource
from tui.tapview import TapScreen


class StatusBar(Static):
    """One line: the project, live or disconnected, the snapshot, the time of the data."""


class OverviewScreen(Screen[None]):
    """Every service and every edge, refreshed each second; the keys act on the service
    under the cursor."""

    AUTO_FOCUS = "#services"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "detail", "Detail", show=False),
        Binding("f", "faults", "Faults"),
        Binding("s", "split", "Split"),
        Binding("p", "policy", "Policy"),
        Binding("a", "access", "Access"),
        Binding("t", "tap", "Tap"),
        Binding("g", "graph", "Graph"),
        Binding("k", "kill", "Kill"),
        Binding("r", "restart", "Restart"),
    ]

    def __init__(self, source: MeshSource, project: str = "") -> None:
        super().__init__()
        self.source = source
        self.project = project
        self.status: payloads.StatusEvent | None = None
        """The latest status the app received (``None``: none yet)."""
        self.problem = ""
        """Why the app is not connected, while it is not."""
        self.wide: bool | None = None
        """Whether the tables have the last minute's column (the terminal is wide enough)."""

    def compose(self) -> ComposeResult:
        yield StatusBar(id="bar")
        with Vertical():
            yield Static("services (rates over the last 10 s)", classes="caption")
            yield DataTable(id="services", cursor_type="row", zebra_stripes=True)
            yield Static("edges: who calls whom", classes="caption")
            yield DataTable(id="edges", cursor_type="row", show_cursor=False)
        yield Footer()

    def on_mount(self) -> None:
        self._columns()
        self.watch(self.app, "problem", self._problem_changed)
        self.watch(self.app, "status", self._status_changed)

    def _status_changed(self, status: payloads.StatusEvent | None) -> None:
        self.status = status
        if status is not None:
            self.problem = ""
            self.show(status)
        self.show_bar()

    def _problem_changed(self, problem: str) -> None:
        if problem:
            self.problem = problem
            self.show_bar()

    def show_bar(self) -> None:
        """The project, live or disconnected (and why), the snapshot, the time of the data."""
        bar = self.query_one(StatusBar)
        project = (self.status.get("project") if self.status else None) or self.project or "mesh"
        if not self.problem and self.status is not None:
            clock = time.strftime("%H:%M:%S", time.localtime(self.status.get("ts", time.time())))
            version = self.status.get("snapshot_version")
            bar.update(Text(f"devmesh · {project} · ● live · snapshot {version} · {clock}"))
            bar.remove_class("disconnected")
        else:
            bar.update(Text(f"devmesh · {project} · ✖ disconnected, retrying: {self.problem}"))
            bar.add_class("disconnected")

    def _columns(self) -> None:
        """The tables' columns for the terminal's width (again when it crosses ``WIDE``)."""
        wide = self.app.size.width >= render.WIDE
        if wide == self.wide:
            return
        self.wide = wide
        services = self.query_one("#services", DataTable)
        services.clear(columns=True)
        services.add_columns(*render.service_columns(wide))
        edges = self.query_one("#edges", DataTable)
        edges.clear(columns=True)
        edges.add_columns(*render.edge_columns(wide))

    def on_resize(self) -> None:
        if self.status is not None:
            self.show(self.status)

    def show(self, status: payloads.Status) -> None:
        """Redraw both tables from a status, keeping the cursor on the same service."""
        selected = self.selected_service()
        self._columns()
        wide = bool(self.wide)
        spark = render.spark_width(self.app.size.width)
        services = self.query_one("#services", DataTable)
        services.clear()
        for row in render.service_rows(status, spark):
            services.add_row(*row.cells(wide), key=row.name.plain)
        names = [s["name"] for s in status["services"]]
        if selected in names:
            services.move_cursor(row=names.index(selected))
        edges = self.query_one("#edges", DataTable)
        edges.clear()
        faulted = {f["service"] for f in status.get("faults", [])}
        ordered = sorted(status["edges"], key=lambda e: -(e.get("rps") or 0.0))
        for edge in ordered:
            edges.add_row(*render.edge_cells(edge, faulted, wide, spark))

    def select(self, service: str) -> None:
        """Put the cursor on ``service``."""
        table = self.query_one("#services", DataTable)
        for index in range(table.row_count):
            key, _ = table.coordinate_to_cell_key(Coordinate(index, 0))
            if key.value == service:
                table.move_cursor(row=index)
                return

    def selected_service(self) -> str | None:
        table = self.query_one("#services", DataTable)
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)

    def _service(self) -> payloads.Service | None:
        status = self.status
        name = self.selected_service()
        if status is None or name is None:
            self.notify("no service to act on yet", severity="warning")
            return None
        return next((s for s in status["services"] if s["name"] == name), None)

    def action_faults(self) -> None:
        service = self._service()
        if service is not None:
            self.app.push_screen(FaultScreen(self.source, service["name"]))

    def action_split(self) -> None:
        service = self._service()
        if service is None:
            return
        if len(service["versions"]) < 2:
            self.notify(
                f"{service['name']} has one version: there is nothing to split",
                severity="warning",
            )
            return
        self.app.push_screen(SplitScreen(self.source, service))

    def action_tap(self) -> None:
        self.app.push_screen(TapScreen(self.source, self.selected_service()))

    def action_graph(self) -> None:
        self.app.push_screen(GraphScreen())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "services":
            self.action_detail()

    def action_detail(self) -> None:
        service = self._service()
        if service is not None:
            self.app.push_screen(DetailScreen(self.source, service["name"]))

    def action_policy(self) -> None:
        service = self._service()
        if service is not None:
            self.app.push_screen(PolicyScreen(self.source, service["name"]))

    def action_access(self) -> None:
        service = self._service()
        if service is not None:
            self.app.push_screen(AccessScreen(self.source, service))

    def action_kill(self) -> None:
        """The service's only instance; with several, the detail view picks one."""
        service = self._service()
        if service is None:
            return
        if len(service["instances"]) != 1:
            self.notify(
                f"{service['name']} has {len(service['instances'])} instances: pick one in its "
                "detail (enter), then k",
                severity="warning",
            )
            return
        detail = DetailScreen(self.source, service["name"])
        self.app.push_screen(detail)
        detail.call_after_refresh(detail.action_kill)

    def action_restart(self) -> None:
        service = self._service()
        if service is not None:
            detail = DetailScreen(self.source, service["name"])
            self.app.push_screen(detail)
            detail.call_after_refresh(detail.action_restart)
