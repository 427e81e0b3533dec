"""How the CLI prints: errors, progress, tables. The only module that knows about rich."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from devmesh.errors import DevmeshError
from devmesh.units import format_duration

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(exc: DevmeshError) -> None:
    """``error: <what>``, its supporting lines, ``hint: <what to do>``.

    Lines are never broken by devmesh (soft wrap): a path or a log line stays
    whole for the terminal to wrap, and for the user to copy or grep.
    """
    err_console.print(Text("error: ", style="bold red") + Text(exc.message), soft_wrap=True)
    for line in exc.details:
        err_console.print(Text(f"  {line}", style="dim"), soft_wrap=True)
    if exc.hint:
        err_console.print(Text("hint: ", style="bold yellow") + Text(exc.hint), soft_wrap=True)


def print_warning(text: str) -> None:
    err_console.print(Text("warning: ", style="bold yellow") + Text(text), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


class RichProgress:
    """Shows the step in progress on a spinner and one line per finished step."""

    def __init__(self, out: Console = console) -> None:
        self._console = out
        self._status: Status | None = None
        self._began = time.monotonic()

    def __enter__(self) -> RichProgress:
        if self._console.is_terminal:
            self._status = self._console.status("starting")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def begin(self, what: str) -> None:
        if self._status is not None:
            self._status.update(what)

    def done(self, what: str, detail: str, seconds: float) -> None:
        line = Text("  ✔ ", style="green") + Text(f"{what:<24}") + Text(f" {detail}")
        line += Text(f"  {seconds:.1f}s", style="dim")
        self._console.print(line)

    def note(self, text: str) -> None:
        self._console.print(Text(f"  {text}", style="yellow"))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began


BREAKER_STYLE = {"closed": "green", "half-open": "yellow", "open": "bold red"}


def breaker_text(breaker: dict[str, Any]) -> Text:
    """``closed``, ``half-open``, or ``open (retry in 12s)``: red means open, everywhere."""
    state = str(breaker.get("state") or "closed")
    text = Text(state, style=BREAKER_STYLE.get(state, ""))
    retry_in = breaker.get("retry_in")
    if state == "open" and retry_in is not None:
        text += Text(f" (retry in {retry_in:.0f}s)", style="red")
    return text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


STATE_STYLE = {"ready": "green", "starting": "yellow", "unhealthy": "red", "disconnected": "red"}


def status_tables(status: dict[str, Any]) -> list[Table]:
    services = Table(title=f"project {status.get('project')}", title_justify="left")
    for column in ("SERVICE", "VERSION", "INSTANCE", "STATE", "URL"):
        services.add_column(column)
    for service in status["services"]:
        split = service.get("split")
        for index, instance in enumerate(service["instances"]):
            version = instance["version"]
            if split:
                version += f" ({split.get(version, 0):g}%)"
            services.add_row(
                service["name"] if index == 0 else "",
                version,
                instance["id"],
                Text(instance["state"], style=STATE_STYLE.get(instance["state"], "")),
                (service.get("url") or "") if index == 0 else "",
            )
    edges = Table(
        title=f"traffic (rates over the last {format_duration(status['window_s'])})",
        title_justify="left",
    )
    columns = ("SOURCE", "DESTINATION", "RPS", "SUCCESS", "P50", "P99", "REQUESTS", "ERRORS")
    for column in (*columns, "BREAKER"):
        edges.add_column(
            column, justify="left" if column in ("SOURCE", "DESTINATION", "BREAKER") else "right"
        )
    for edge in status["edges"]:
        rate = edge["success_rate"]
        injected = edge.get("injected") or 0
        edges.add_row(
            edge["source"],
            edge["destination"],
            f"{edge['rps']:.1f}",
            Text(_pct(rate), style="" if rate is None or rate >= 0.99 else "red"),
            _ms(edge["p50_ms"]),
            _ms(edge["p99_ms"]),
            str(edge["requests"]),
            f"{edge['errors']} ({injected} injected)" if injected else str(edge["errors"]),
            breaker_text(edge.get("breaker") or {}),
        )
    return [services, edges] if status["edges"] else [services]
