"""The TUI's editors: faults on calls to a service (``f``) and its split (``s``).

The form is read by the same code as ``devmesh fault add``'s flags
(``devmesh.forms.faults``), so it offers every fault the CLI does; the control plane
then validates the fault with the config's own code. What either refuses comes back
as a notification, in its words, and nothing changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Static

import devmesh.payloads as payloads
from devmesh.errors import DevmeshError
from devmesh.forms import faults
from devmesh.forms.faults import fault_from_fields
from devmesh.forms.fields import Names
from devmesh.forms.splits import rebalance, whole_split
from devmesh.statetext import expires_text, origin_text
from tui.form import FormScreen, said
from tui.source import MeshSource

FIELDS = (
    ("delay", "delay", "e.g. 200ms"),
    ("jitter", "jitter", "e.g. 50ms (with a delay)"),
    ("abort", "abort", "an HTTP status (503) or reset"),
    ("bandwidth", "bandwidth", "bytes a second of the answer, e.g. 64kB"),
    ("hang", "hang", "accept, never answer, for e.g. 10s"),
    ("percent", "percent", "of matching calls (100)"),
    ("path", "path", "only paths starting so, e.g. /items"),
    ("method", "method", "only this method, e.g. GET"),
    ("header", "header", "only with this header, e.g. x-debug=1"),
    ("source", "source", "only calls from this service"),
    ("for", "for", "removed by itself after, e.g. 2m"),
)
NAMES = Names({key: label for key, label, _ in FIELDS})
"""The form's fields, named in messages by their labels."""


class FaultScreen(FormScreen):
    """The faults on calls to one service: those in force, and a form to add one."""

    CSS = (
        FormScreen.CSS
        + """
    FaultScreen { layout: vertical; }
    #faults { height: auto; max-height: 8; margin-bottom: 1; }
    #actions { height: 3; margin-top: 1; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "apply", "Add", priority=True),
        Binding("ctrl+d", "remove", "Remove selected", priority=True),
        Binding("ctrl+r", "remove_all", "Remove all", priority=True),
    ]
    FIELDS = FIELDS

    def __init__(self, source: MeshSource, service: str) -> None:
        super().__init__()
        self.source = source
        self.service = service

    def compose(self) -> ComposeResult:
        yield Static(Text(f"faults on calls to {self.service}", style="bold"), classes="caption")
        yield DataTable(id="faults", cursor_type="row")
        yield from self.fields()
        with Horizontal(id="actions"):
            yield Button("Add (enter)", id="add", variant="primary")
            yield Button("Remove selected (ctrl+d)", id="remove")
            yield Button("Remove all (ctrl+r)", id="remove-all", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#faults", DataTable)
        table.add_columns("ID", "DOES", "MATCHES", "EXPIRES", "FROM")
        self.watch(self.app, "status", self.refresh_faults)
        self.field("delay").focus()

    def refresh_faults(self, status: payloads.Status | None) -> None:
        """The faults on calls to the service, as in the latest status."""
        if status is None:
            return
        table = self.query_one("#faults", DataTable)
        selected = table.cursor_row
        table.clear()
        for fault in status.get("faults", []):
            if fault["service"] != self.service:
                continue
            table.add_row(
                Text(fault["id"]),
                Text(fault["does"]),
                Text(fault["matches"]),
                expires_text(fault.get("expires_in")),
                origin_text(fault["origin"]),
                key=fault["id"],
            )
        if table.row_count:
            table.move_cursor(row=min(selected, table.row_count - 1))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"add": self.action_apply, "remove": self.action_remove}
        actions.get(str(event.button.id), self.action_remove_all)()

    def action_apply(self) -> None:
        """Add the fault the form describes."""
        values = self.values()
        try:
            fault = fault_from_fields(values, names=NAMES)
            lasts = faults.lasts(values["for"], NAMES)
        except DevmeshError as exc:
            self.notify(said(exc), title="fault not added", severity="error")
            return
        self._add(fault, lasts)

    @work(exclusive=True, group="fault-change")
    async def _add(self, fault: dict[str, Any], lasts: float | None) -> None:
        try:
            added = await self.source.add_fault(self.service, fault, lasts)
        except DevmeshError as exc:
            self.notify(exc.message, title="fault not added", severity="error")
            return
        for key, _, _ in FIELDS:
            self.field(key).value = ""
        self.notify(f"fault {added['id']} on calls to {self.service}: {added['does']}")

    def action_remove(self) -> None:
        table = self.query_one("#faults", DataTable)
        if table.row_count == 0:
            self.notify("no fault to remove", severity="warning")
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        self._remove(str(row_key.value))

    @work(exclusive=True, group="fault-change")
    async def _remove(self, fault_id: str) -> None:
        try:
            await self.source.remove_fault(fault_id)
        except DevmeshError as exc:
            self.notify(exc.message, title="fault not removed", severity="error")
            return
        self.notify(f"removed fault {fault_id}")

    @work(exclusive=True, group="fault-change")
    async def action_remove_all(self) -> None:
        try:
            removed = await self.source.reset_faults(self.service)
        except DevmeshError as exc:
            self.notify(exc.message, title="faults not removed", severity="error")
            return
        self.notify(f"removed {len(removed)} runtime fault(s) on {self.service}")


class SplitScreen(Screen[None]):
    """A service's split: up/down pick a version, left/right move 5 % to or from the
    others (always summing to 100), enter applies."""

    CSS = """
    #weights { height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("left", "move(-5)", "-5%"),
        Binding("right", "move(5)", "+5%"),
        Binding("enter", "apply", "Apply"),
    ]

    def __init__(self, source: MeshSource, service: payloads.Service) -> None:
        super().__init__()
        self.source = source
        self.service = service["name"]
        self.weights = whole_split(list(service["versions"]), service.get("split"))

    def compose(self) -> ComposeResult:
        yield Static(
            Text(f"split of {self.service}: ", style="bold")
            + Text("↑↓ version, ←→ 5 %, enter applies, esc leaves it as it was"),
            classes="caption",
        )
        yield DataTable(id="weights", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#weights", DataTable)
        table.add_columns("VERSION", "WEIGHT", "")
        self._draw()
        table.focus()

    def _draw(self) -> None:
        table = self.query_one("#weights", DataTable)
        row = table.cursor_row
        table.clear()
        for version, weight in self.weights.items():
            bar = Text("█" * (weight // 4), style="cyan")
            table.add_row(Text(version), f"{weight}%", bar, key=version)
        table.move_cursor(row=row)

    def selected_version(self) -> str:
        table = self.query_one("#weights", DataTable)
        return list(self.weights)[table.cursor_row]

    def action_move(self, step: int) -> None:
        self.weights = rebalance(self.weights, self.selected_version(), step)
        self._draw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_apply()

    @work(exclusive=True, group="split")
    async def action_apply(self) -> None:
        try:
            await self.source.set_split(self.service, dict(self.weights))
        except DevmeshError as exc:
            self.notify(exc.message, title="split not applied", severity="error")
            return
        shown = " ".join(f"{v}={w}" for v, w in self.weights.items())
        self.notify(f"{self.service}: {shown}")
        self.app.pop_screen()
