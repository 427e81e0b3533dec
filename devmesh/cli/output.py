"""How the CLI prints: errors, progress, tables (laid out for a terminal or whole, by
``devmesh.cli.layout``). With it, the only module that knows about rich."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.status import Status
from rich.text import Text

from devmesh import payloads
from devmesh.cli.layout import Listing, StdoutConsole
from devmesh.errors import ConfigError, DevmeshError
from devmesh.statetext import breaker_text, clock_text, security_text, state_text, status_text
from devmesh.units import human_duration

Renderable = RenderableType

console = StdoutConsole(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(exc: DevmeshError) -> None:
    """``error: <what>``, its supporting lines, ``hint: <what to do>``.

    Lines are never broken by devmesh (soft wrap): a path or a log line stays
    whole for the terminal to wrap, and for the user to copy or grep.
    """
    for warning in exc.warnings if isinstance(exc, ConfigError) else ():
        print_warning(warning)
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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def status_tables(status: payloads.Status) -> list[Listing]:
    """The services' instances (on a terminal, a service's name and URL once over its
    instances) and, if there are any, the edges."""
    services = Listing(title=f"project {status.get('project')}")
    for column in ("SERVICE", "VERSION", "INSTANCE", "STATE", "RESTARTS", "URL"):
        services.add_column(
            column,
            justify="right" if column == "RESTARTS" else "left",
            grouped=column in ("SERVICE", "URL"),
        )
    for service in status["services"]:
        split = service.get("split")
        for instance in service["instances"]:
            version = instance["version"]
            if split:
                version += f" ({split.get(version, 0):g}%)"
            services.add_row(
                Text(service["name"]),
                Text(version),
                Text(instance["id"]),
                state_text(instance["state"]),
                str(instance.get("restarts", 0)),
                Text(service.get("url") or ""),
            )
    edges = Listing(title=f"traffic (rates over the last {human_duration(status['window_s'])})")
    columns = ("SOURCE", "DESTINATION", "RPS", "SUCCESS", "P50", "P99", "REQUESTS", "ERRORS")
    for column in (*columns, "BREAKER", "MTLS"):
        edges.add_column(
            column,
            justify="left" if column in ("SOURCE", "DESTINATION", "BREAKER", "MTLS") else "right",
        )
    for edge in status["edges"]:
        rate = edge["success_rate"]
        injected = edge.get("injected") or 0
        edges.add_row(
            Text(edge["source"]),
            Text(edge["destination"]),
            f"{edge['rps']:.1f}",
            Text(_pct(rate), style="" if rate is None or rate >= 0.99 else "red"),
            _ms(edge["p50_ms"]),
            _ms(edge["p99_ms"]),
            str(edge["requests"]),
            f"{edge['errors']} ({injected} injected)" if injected else str(edge["errors"]),
            breaker_text(edge.get("breaker")),
            security_text(edge.get("security")),
        )
    return [services, edges] if status["edges"] else [services]


def top_table(status: payloads.Status, edges: list[payloads.Edge], sort: str) -> Listing:
    """The edges in the order given (idle ones left out, unless sorted by other than rps)."""
    table = Listing(
        title=f"edges by {sort} (last {human_duration(status['window_s'])})  "
        f"{time.strftime('%H:%M:%S')}"
    )
    for column in ("SOURCE", "DESTINATION", "RPS", "SUCCESS", "P50", "P90", "P99", "BREAKER"):
        table.add_column(column, justify="left" if column[0] in "SDB" else "right")
    for edge in (e for e in edges if e["window"]["requests"] or sort != "rps"):
        rate = edge["success_rate"]
        table.add_row(
            Text(edge["source"]),
            Text(edge["destination"]),
            f"{edge['rps']:.1f}",
            Text(
                "-" if rate is None else f"{rate * 100:.1f}%",
                style="" if rate is None or rate >= 0.99 else "red",
            ),
            _ms(edge["p50_ms"]),
            _ms(edge["p90_ms"]),
            _ms(edge["p99_ms"]),
            breaker_text(edge.get("breaker")),
        )
    return table


def tap_line(record: payloads.TapRequest) -> Text:
    """``12:00:01.123 frontend → catalog GET /items 200 12.3ms v2 catalog-v2-1 trace=…``."""
    ts = record.get("ts") or time.time()
    clock = clock_text(ts)
    status = int(record.get("status") or 0)
    line = Text(f"{clock} ", style="dim")
    line += Text(f"{record['source']} → {record['destination']} ", style="cyan")
    line += Text(f"{record['method']} {record['path']} ")
    line += status_text(status)
    line += Text(f" {record['latency_ms']:.1f}ms")
    if record.get("version"):
        line += Text(f" {record['version']} {record['instance']}", style="dim")
    if record.get("retries"):
        line += Text(f" retries={record['retries']}", style="yellow")
    if record.get("error"):
        line += Text(f" error={record['error']}", style="red")
    if record.get("fault"):
        line += Text(f" fault={record['fault']}", style="magenta")
    if record.get("trace_id"):
        line += Text(f" trace={record['trace_id']}", style="dim")
    return line


def tap_missed(count: int, rate: float) -> Text:
    return Text(f"… {count} requests not shown (at most {rate:g} a second)", style="dim")


def status_group(status: payloads.Status) -> Renderable:
    return Group(*status_tables(status))


class LiveView:
    """A region of the terminal redrawn in place (``status --watch``, ``top``)."""

    def __init__(self) -> None:
        self._live = Live(console=console, auto_refresh=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def show(self, what: Renderable) -> None:
        self._live.update(what, refresh=True)


def trace_table(traces: list[payloads.TraceSummary]) -> Listing:
    table = Listing(title="latest traces (newest first)")
    for column in ("TRACE", "WHEN", "REQUEST", "STATUS", "TOOK", "SPANS", "FAULTS"):
        table.add_column(column, justify="right" if column in ("TOOK", "SPANS") else "left")
    for trace in traces:
        status = int(trace["status"])
        table.add_row(
            trace["trace_id"],
            time.strftime("%H:%M:%S", time.localtime(trace["start"])),
            Text(trace["root"]),
            Text(str(status or "---"), style="bold red" if trace["failed"] else "green"),
            f"{trace['duration_ms']:.1f}ms",
            str(trace["spans"]),
            Text(",".join(trace["faults"]), style="magenta"),
        )
    return table


FINGERPRINT_SHOWN = 16
"""How much of a fingerprint a terminal shows (then ``…``); printed whole, all of it."""


def certs_table(data: payloads.Certs) -> Listing:
    """Each sidecar's identity; the CA's fingerprint in the title (its start on a terminal,
    as in the FINGERPRINT column)."""
    ca = data["ca"]
    title = whole_title = "identities"
    if ca:
        title += f" (CA {ca['fingerprint'][:FINGERPRINT_SHOWN]}…, in {ca['folder']})"
        whole_title += f" (CA {ca['fingerprint']}, in {ca['folder']})"
    table = Listing(title=title, whole_title=whole_title)
    for column in ("SERVICE", "INSTANCE", "SPIFFE ID"):
        table.add_column(column)
    table.add_column("FINGERPRINT", max_width=FINGERPRINT_SHOWN + 1)
    table.add_column("EXPIRES IN")
    table.add_column("RENEWS IN")
    table.add_column("HELD", justify="center")
    for identity in data["identities"]:
        table.add_row(
            Text(identity["service"]),
            Text(identity["instance"]),
            Text(identity["spiffe_id"]),
            identity["fingerprint"],
            human_duration(identity["expires_in"]),
            human_duration(identity["renews_in"]),
            Text("yes", style="green") if identity["installed"] else Text("not yet", style="red"),
        )
    return table
