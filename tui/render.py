"""The mesh's status (the control plane's JSON) as the cells and lines the TUI shows.

Pure functions, so what a screen shows is tested without a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

import devmesh.payloads as payloads
from devmesh.statetext import breaker_text, security_text, worst_breaker

BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 20) -> Text:
    """``values`` (oldest first) as ``width`` block characters, scaled to the largest: each
    character sums an equal share of the values, so the whole span shows whatever the
    width (an empty stretch is a space, any traffic at least the lowest block)."""
    shown = [float(v) for v in values]
    if len(shown) > width:
        shown = [
            sum(shown[i * len(shown) // width : (i + 1) * len(shown) // width])
            for i in range(width)
        ]
    shown = [0.0] * (width - len(shown)) + shown
    top = max(shown, default=0.0)
    if top <= 0:
        return Text(" " * width)
    chars = []
    for value in shown:
        level = 0 if value <= 0 else max(1, round(value / top * (len(BLOCKS) - 1)))
        chars.append(BLOCKS[level])
    return Text("".join(chars), style="cyan")


def percent(rate: float | None) -> Text:
    if rate is None:
        return Text("-", style="dim")
    style = "green" if rate >= 0.99 else "yellow" if rate >= 0.95 else "bold red"
    return Text(f"{rate * 100:.1f}%", style=style)


def ms(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(f"{value:.1f}ms" if value < 1000 else f"{value / 1000:.2f}s")


def rps(value: float | None) -> Text:
    if not value:
        return Text("0", style="dim")
    return Text(f"{value:.1f}")


@dataclass(frozen=True)
class ServiceRow:
    name: Text
    versions: Text
    instances: Text
    rps: Text
    success: Text
    p50: Text
    p99: Text
    minute: Text
    breaker: Text
    faults: Text

    def cells(self, wide: bool) -> tuple[Text, ...]:
        """The row's cells; ``wide`` (a terminal of ``WIDE`` columns or more) adds the last
        minute's sparkline."""
        minute = (self.minute,) if wide else ()
        return (
            self.name,
            self.versions,
            self.instances,
            self.rps,
            self.success,
            self.p50,
            self.p99,
            *minute,
            self.breaker,
            self.faults,
        )


WIDE = 100
"""From this many columns on, the tables add a sparkline of the last minute (under it,
everything else still fits in 80 columns)."""


def service_columns(wide: bool) -> tuple[str, ...]:
    minute = ("LAST MINUTE",) if wide else ()
    return ("SERVICE", "VERSIONS", "UP", "RPS", "OK", "P50", "P99", *minute, "BREAKER", "FAULT")


def edge_columns(wide: bool) -> tuple[str, ...]:
    minute = ("LAST MINUTE",) if wide else ()
    return ("EDGE", "RPS", "OK", "P50", "P99", *minute, "BREAKER", "MTLS", "")


def spark_width(columns: int) -> int:
    """How wide the sparklines are on a terminal of ``columns``."""
    return max(10, min(30, columns - 80))


def service_rows(status: payloads.Status, spark_width: int = 20) -> list[ServiceRow]:
    """One row per service: its versions (and split), instances up, the traffic to it from
    every caller, the worst breaker of the edges into it, its active faults."""
    faults: dict[str, int] = {}
    for fault in status.get("faults", []):
        faults[fault["service"]] = faults.get(fault["service"], 0) + 1
    rows = []
    for service in status["services"]:
        name = service["name"]
        traffic = service.get("traffic")
        history = traffic["history"]["requests"] if traffic and "history" in traffic else []
        into = [e.get("breaker") for e in status["edges"] if e["destination"] == name]
        rows.append(
            ServiceRow(
                name=Text(name),
                versions=versions(service),
                instances=instances(service["instances"]),
                rps=rps(traffic.get("rps") if traffic else None),
                success=percent(traffic.get("success_rate") if traffic else None),
                p50=ms(traffic.get("p50_ms") if traffic else None),
                p99=ms(traffic.get("p99_ms") if traffic else None),
                minute=sparkline(history, spark_width),
                breaker=breaker_text(worst_breaker(into), short=True)
                if into
                else Text("-", style="dim"),
                faults=(
                    Text(f"⚡{faults[name]}", style="bold magenta") if name in faults else Text("")
                ),
            )
        )
    return rows


def versions(service: payloads.Service) -> Text:
    """``v1 90 · v2 10`` with a split, ``v1 · v2`` without, ``-`` for one unnamed version."""
    names = service.get("versions") or []
    split = service.get("split")
    if names == ["default"] and not split:
        return Text("-", style="dim")
    parts = [f"{v} {split.get(v, 0):g}" if split else v for v in names]
    return Text(" · ".join(parts), style="bold" if split else "")


def instances(entries: Sequence[payloads.Instance]) -> Text:
    ready = sum(1 for i in entries if i["state"] == "ready")
    style = "green" if ready == len(entries) else "yellow" if ready else "bold red"
    return Text(f"{ready}/{len(entries)}", style=style)


def edge_cells(
    edge: payloads.Edge, faulted: set[str], wide: bool, spark: int = 20
) -> tuple[Text, ...]:
    history = edge["history"]["requests"] if "history" in edge else []
    mark = Text("⚡ fault", style="bold magenta") if edge["destination"] in faulted else Text("")
    minute = (sparkline(history, spark),) if wide else ()
    return (
        Text(f"{edge['source']} → {edge['destination']}"),
        rps(edge.get("rps")),
        percent(edge.get("success_rate")),
        ms(edge.get("p50_ms")),
        ms(edge.get("p99_ms")),
        *minute,
        breaker_text(edge.get("breaker"), short=True),
        security_text(edge.get("security"), short=True),
        mark,
    )
