"""A service up close (``enter`` on the main view): its versions and instances with their
own numbers, its latency histogram, the policy in force, the breaker's recent history
into it, and the selected instance's latest log lines. ``k`` kills the selected
instance and ``r`` restarts the service, each after a confirmation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

import devmesh.payloads as payloads
from devmesh.errors import DevmeshError
from devmesh.statetext import breaker_state_text, state_text
from tui import render
from tui.confirm import ConfirmScreen
from tui.source import MeshSource

LOG_LINES = 12
LOG_REFRESH_S = 2.0


def describe_policy(policy: dict[str, Any], overrides: dict[str, Any]) -> Text:
    """The settings in force in a few words; the ones changed at run time in bold."""
    text = Text()

    def part(label: str, value: str, key: str) -> None:
        if text:
            text.append(" · ")
        text.append(f"{label} ")
        text.append(value, style="bold yellow" if key in overrides else "")

    retries = policy.get("retries")
    part("timeout", str(policy.get("timeout") or "none"), "timeout")
    if retries:
        on = ",".join(retries.get("retry_on", []))
        part("retries", f"{retries.get('attempts')} on {on}", "retries")
    else:
        part("retries", "none", "retries")
    breaker = policy.get("breaker") or {}
    panic = breaker.get("panic_threshold")
    if isinstance(panic, int | float):
        panic_text = f", panic <{panic:g}%" if panic else ", no panic"
    else:
        panic_text = ""
    part(
        "breaker",
        f"{breaker.get('consecutive_5xx')} 5xx in a row, ejects {breaker.get('base_ejection_time')}"
        f"..{breaker.get('max_ejection_time')}, ≤{breaker.get('max_ejection_percent')}%"
        + panic_text,
        "breaker",
    )
    part("lb", str(policy.get("lb")), "lb")
    return text


def histogram(bins: Sequence[tuple[float | None, int]], width: int = 40) -> Table:
    """The window's latencies as horizontal bars, one per bin."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column(justify="right")
    top = max((count for _, count in bins), default=0)
    lower = 0.0
    for bound, count in bins:
        label = f"≤{bound:g}ms" if bound is not None else f">{lower:g}ms"
        bar = "█" * (round(count / top * width) if top else 0)
        table.add_row(label, Text(bar, style="cyan"), str(count))
        lower = bound if bound is not None else lower
    return table


class DetailScreen(Screen[None]):
    CSS = """
    DetailScreen { layout: vertical; }
    #policy { height: auto; padding: 0 1; }
    #members { height: auto; max-height: 12; }
    #middle { height: auto; }
    #latency { width: 1fr; height: auto; padding: 0 1; }
    #history { width: 1fr; height: auto; padding: 0 1; }
    #logs { height: 1fr; padding: 0 1; border-top: solid $panel; }
    """
    AUTO_FOCUS = "#members"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "kill", "Kill instance"),
        Binding("r", "restart", "Restart service"),
    ]

    def __init__(self, source: MeshSource, service: str) -> None:
        super().__init__()
        self.source = source
        self.service = service
        self.policy: payloads.PolicyAnswer | None = None
        self.status: payloads.Status | None = None
        """The latest status the app received."""
        self.logs_of: str | None = None
        """The instance whose logs show."""
        self.busy = False
        """A kill or restart runs: the keys wait for it."""

    def compose(self) -> ComposeResult:
        yield Static(Text(self.service, style="bold"), classes="caption", id="title")
        yield Static("policy: loading", id="policy")
        yield DataTable(id="members", cursor_type="row")
        with Horizontal(id="middle"):
            yield Static(id="latency")
            yield Static(id="history")
        yield Static(id="logs")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#members", DataTable)
        table.add_columns("VERSION / INSTANCE", "STATE", "RPS", "OK", "P50", "P99")
        self.watch(self.app, "status", self._status_changed)
        self.set_interval(LOG_REFRESH_S, self._load_logs)
        self._load_policy()
        self._load_logs()

    def _status_changed(self, status: payloads.Status | None) -> None:
        self.status = status
        self.refresh_view()

    def _service(self) -> payloads.Service | None:
        status = self.status
        if status is None:
            return None
        return next((s for s in status["services"] if s["name"] == self.service), None)

    def refresh_view(self) -> None:
        service, status = self._service(), self.status
        if service is None or status is None:
            return
        self.query_one("#title", Static).update(
            Text(self.service, style="bold") + Text("  ") + render.versions(service)
        )
        table = self.query_one("#members", DataTable)
        row = table.cursor_row
        table.clear()
        by_version = service.get("by_version") or {}
        for version in service["versions"]:
            table.add_row(
                Text(version, style="bold"),
                "",
                *_numbers(by_version.get(version)),
                key=f"version:{version}",
            )
            for instance in service["instances"]:
                if instance["version"] != version:
                    continue
                shown = state_text(instance["state"])
                if instance.get("restarts"):
                    shown += Text(f" ↻{instance['restarts']}", style="dim")
                table.add_row(
                    Text(f"└ {instance['id']}"),
                    shown,
                    *_numbers(instance.get("served")),
                    key=f"instance:{instance['id']}",
                )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))
        traffic = service.get("traffic")
        bins = (traffic.get("latency_bins") if traffic else None) or []
        latency = self.query_one("#latency", Static)
        if bins:
            window = traffic.get("window_s", 10) if traffic else 10
            latency.update(
                Group(Text(f"latency, last {window} s", style="dim"), histogram(bins, 24))
            )
        else:
            latency.update(Text("no traffic yet", style="dim"))
        self.query_one("#history", Static).update(self._breaker_history(status))

    def _breaker_history(self, status: payloads.Status) -> Table:
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim")
        table.add_column()
        events = [
            event
            for edge in status["edges"]
            if edge["destination"] == self.service
            for event in edge.get("breaker_history", [])
        ]
        if not events:
            table.add_row("breaker", Text("no ejections yet", style="green"))
        for event in sorted(events, key=lambda e: e["ts"])[-6:]:
            when = _clock(event["ts"])
            text = Text(f"{event['source']} → ") + breaker_state_text(event["state"])
            if event.get("reason") and event["state"] == "open":
                text += Text(f" {event['endpoint']}: {event['reason']}", style="dim")
            table.add_row(when, text)
        return table

    def selected_instance(self) -> str | None:
        table = self.query_one("#members", DataTable)
        if table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        value = str(key.value)
        return value.split(":", 1)[1] if value.startswith("instance:") else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Redrawing the table each second highlights a row again: reload only on a move.
        if self._logged_instance() != self.logs_of:
            self._load_logs()

    def _logged_instance(self) -> str | None:
        """The selected instance, else the service's first."""
        instance = self.selected_instance()
        service = self._service()
        if instance is None and service is not None and service["instances"]:
            instance = str(service["instances"][0]["id"])
        return instance

    @work(exclusive=True, group="policy")
    async def _load_policy(self) -> None:
        try:
            answer = await self.source.policy(self.service)
        except DevmeshError as exc:
            self.query_one("#policy", Static).update(Text(exc.message, style="red"))
            return
        self.policy = answer
        self.query_one("#policy", Static).update(
            Text("policy: ", style="dim")
            + describe_policy(answer["policy"], answer.get("overrides") or {})
        )

    @work(exclusive=True, group="logs")
    async def _load_logs(self) -> None:
        instance = self._logged_instance()
        if instance is None:
            return
        self.logs_of = instance
        try:
            lines = await self.source.logs(instance, LOG_LINES)
        except (DevmeshError, OSError) as exc:
            self.query_one("#logs", Static).update(Text(str(exc), style="red"))
            return
        text = Text(f"{instance}: its latest log lines\n", style="dim")
        text += Text("\n".join(lines) if lines else "(nothing logged yet)")
        self.query_one("#logs", Static).update(text)

    def action_kill(self) -> None:
        if self._refuse_while_busy():
            return
        instance = self.selected_instance()
        service = self._service()
        if instance is None and service is not None and len(service["instances"]) == 1:
            instance = service["instances"][0]["id"]
        if instance is None:
            self.notify("pick an instance (↑ ↓) to kill", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._kill(instance)

        self.app.push_screen(
            ConfirmScreen(f"Kill {instance}? (SIGKILL, as a crash would)"), answered
        )

    def _refuse_while_busy(self) -> bool:
        if self.busy:
            self.notify("a kill or restart is still running", severity="warning")
        return self.busy

    @work(group="lifecycle")
    async def _kill(self, instance: str) -> None:
        self.busy = True
        try:
            await self.source.kill(instance)
        except DevmeshError as exc:
            self.notify(exc.message, title=f"{instance} not killed", severity="error")
            return
        finally:
            self.busy = False
        self.notify(f"killed {instance}; the mesh routes around it (r restarts the service)")

    def action_restart(self) -> None:
        if self._refuse_while_busy():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._restart()

        self.app.push_screen(ConfirmScreen(f"Restart every instance of {self.service}?"), answered)

    @work(group="lifecycle")
    async def _restart(self) -> None:
        self.busy = True
        self.notify(f"restarting {self.service}…")
        try:
            done = await self.source.restart(self.service)
        except DevmeshError as exc:
            self.notify(exc.message, title=f"{self.service} not restarted", severity="error")
            return
        finally:
            self.busy = False
        self.notify(f"{self.service}: {len(done)} instance(s) ready again")


def _numbers(traffic: payloads.Traffic | None) -> tuple[Text, ...]:
    """Rate, success and latency (``-`` for no traffic yet)."""
    if not traffic:
        return (render.rps(None), render.percent(None), render.ms(None), render.ms(None))
    return (
        render.rps(traffic.get("rps")),
        render.percent(traffic.get("success_rate")),
        render.ms(traffic.get("p50_ms")),
        render.ms(traffic.get("p99_ms")),
    )


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))
