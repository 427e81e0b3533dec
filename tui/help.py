"""``?``: every key of the TUI, on one screen."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("main screen", ""),
    ("↑ ↓", "pick a service"),
    ("enter", "the service up close: versions, instances, latency, breaker, logs"),
    ("f", "faults on calls to the service: add (a form), remove one, remove all"),
    ("s", "the service's split between its versions"),
    ("p", "its policy: timeout, retries, breaker settings"),
    ("a", "access to it: its mTLS mode and authorization rules (allow, deny, audit)"),
    ("t", "the live tap of requests (from or to the service)"),
    ("g", "the traffic graph: who calls whom, coloured by errors"),
    ("k", "kill its instance (asks first; with several, pick one in its detail)"),
    ("r", "restart its instances (asks first)"),
    (": or ctrl+p", "the command palette: any action on any service by name"),
    ("?", "this help"),
    ("q", "quit (the mesh keeps running)"),
    ("faults", ""),
    ("enter / ctrl+s", "add the fault in the form"),
    ("ctrl+d / ctrl+r", "remove the selected fault / every runtime fault of the service"),
    ("detail", ""),
    ("↑ ↓, k", "pick an instance (its logs show), kill it"),
    ("r", "restart the service"),
    ("policy", ""),
    ("enter / ctrl+s", "apply the fields you changed"),
    ("access", ""),
    ("enter / ctrl+s", "apply: the mode if changed, the rule if an action is given, a removal"),
    ("split", ""),
    ("↑ ↓ ← →", "pick a version, move 5 % to or from the others"),
    ("enter", "apply the split"),
    ("tap", ""),
    ("/", "filter: catalog 5xx /items >100ms (service, status, path, latency)"),
    ("space", "pause or resume"),
    ("enter", "the request's trace across services"),
    ("everywhere", ""),
    ("esc", "back"),
)


class HelpScreen(ModalScreen[None]):
    CSS = """
    HelpScreen { align: center middle; }
    #keys { width: auto; max-width: 100%; height: auto; border: round $accent; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.pop_screen", "Back"),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            if what:
                table.add_row(key, what)
            else:
                table.add_row(f"[bold]{key}[/]", "")
        yield Static(table, id="keys")
