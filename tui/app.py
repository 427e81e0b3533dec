"""``devmesh tui``: the mesh live, and the keys to change it.

The app reads the control plane's event stream in a worker, so a refresh never blocks a
key, and holds the latest status as a reactive attribute (``status``) that the screens
watch: the main view (``tui/overview.py``) redraws with each one. When the control plane
goes away, ``problem`` says why and the worker dials again until it is back.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import reactive

import devmesh.payloads as payloads
from devmesh.errors import DevmeshError
from tui.commands import MeshCommands
from tui.help import HelpScreen
from tui.overview import OverviewScreen
from tui.source import MeshSource

RETRY_S = 1.0
"""How long the TUI waits before dialling a control plane that went away again."""
CONNECTING = "connecting to the control plane"


class MeshApp(App[None]):
    TITLE = "devmesh"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {MeshCommands}
    CSS = """
    StatusBar { height: 1; background: $panel; padding: 0 1; }
    StatusBar.disconnected { background: $error; color: $text; text-style: bold; }
    #services { height: 1fr; min-height: 5; }
    #edges { height: 1fr; min-height: 4; }
    .caption { height: 1; color: $text-muted; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("colon", "command_palette", "Commands", show=False),
        Binding("q", "quit", "Quit"),
    ]

    status: reactive[payloads.StatusEvent | None] = reactive(None, always_update=True, init=False)
    """The latest status from the event stream (``None`` until the first); screens watch it."""
    problem: reactive[str] = reactive(CONNECTING, always_update=True, init=False)
    """Why the stream is not live, set each time it ends (the last reason, once connected)."""

    def __init__(self, source: MeshSource, project: str = "", retry: float = RETRY_S) -> None:
        super().__init__()
        self.source = source
        self.retry = retry
        self.connected = False
        self.overview = OverviewScreen(source, project)

    def on_mount(self) -> None:
        self.push_screen(self.overview)
        self.run_worker(self._follow(), name="events", exclusive=True)

    async def _follow(self) -> None:
        """Read the event stream for as long as the app runs, dialling again when it ends."""
        while True:
            try:
                async for event in self.source.events():
                    self._on_event(event)
                problem = "the control plane closed the stream"
            except DevmeshError as exc:
                problem = exc.message
            self.connected = False
            self.problem = problem
            await asyncio.sleep(self.retry)

    def _on_event(self, event: payloads.Event) -> None:
        if event["type"] == "status":
            was = self.connected
            self.connected = True
            self.status = event
            if not was and self.problem != CONNECTING:
                self.notify("connected to the control plane again", title="devmesh")
        elif event["type"] == "breaker":
            edge = f"{event['source']} → {event['destination']}"
            if event["state"] == "open":
                self.notify(
                    f"breaker opened on {edge}: {event.get('reason') or 'failures'}",
                    severity="warning",
                )
            elif event["state"] == "closed" and event.get("was") != "closed":
                self.notify(f"breaker closed on {edge}")

    def selected_service(self) -> str | None:
        return self.overview.selected_service()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification as plain text: they quote what users and services wrote (a
        path, a refusal), which must never be read as markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def switch_to_overview(self) -> None:
        """Back to the main view, from whatever is open over it."""
        while self.screen is not self.overview and len(self.screen_stack) > 1:
            self.pop_screen()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
