"""tui.render: the cells the TUI draws, from the control plane's JSON."""

from __future__ import annotations

from devmesh.statetext import breaker_text, worst_breaker
from tui.graph import edge_style, graph
from tui.render import sparkline, versions


def test_a_sparkline_scales_to_its_largest_value_and_keeps_empty_seconds_empty() -> None:
    assert str(sparkline([0, 1, 2, 4, 8], width=5)) == " ▁▂▄█"
    assert str(sparkline([], width=4)) == "    "
    assert str(sparkline([3], width=3)) == "  █", "the newest value is on the right"


def test_a_narrow_sparkline_still_covers_every_value() -> None:
    minute = [0.0] * 30 + [1.0] * 30
    line = str(sparkline(minute, width=6))
    assert line == "   ███", "each character sums ten seconds"


def test_versions_show_the_split_when_there_is_one() -> None:
    assert str(versions({"versions": ["v1", "v2"], "split": {"v1": 90, "v2": 10}})) == (
        "v1 90 · v2 10"
    )
    assert str(versions({"versions": ["v1", "v2"], "split": None})) == "v1 · v2"
    assert str(versions({"versions": ["default"], "split": None})) == "-"


def test_the_worst_breaker_is_open_then_half_open_then_closed() -> None:
    states = [{"state": "closed"}, {"state": "open"}, {"state": "half-open"}]
    assert worst_breaker(states) == {"state": "open"}
    assert worst_breaker([{}, {}]) is None
    in_panic = {"state": "open", "panic": True}
    assert worst_breaker([{"state": "open"}, in_panic]) == in_panic, "the one routing to all"


def test_a_breaker_in_panic_says_it_routes_to_all() -> None:
    state = {"state": "open", "retry_in": 12.0, "panic": True}
    assert str(breaker_text(state)) == "open (retry in 12s) · panic: routing to all"
    assert str(breaker_text(state, short=True)) == "open 12s · panic", "a table's cell"
    shut = {"state": "open", "retry_in": 12.0, "panic": False}
    assert str(breaker_text(shut, short=True)) == "open 12s"
    assert str(breaker_text(None)) == "-"
    assert str(breaker_text({"state": "closed", "panic": False})) == "closed"


def edge(
    source: str, destination: str, rps: float = 10.0, ok: float = 1.0, **more: object
) -> dict[str, object]:
    return {"source": source, "destination": destination, "rps": rps, "success_rate": ok, **more}


def test_the_graph_draws_trees_from_the_services_nobody_calls() -> None:
    status = {
        "edges": [
            edge("ingress", "frontend", 20.0),
            edge("frontend", "catalog", 20.0, 0.9),
            edge("catalog", "pricing", 19.0, breaker={"state": "open", "retry_in": 12.0}),
            edge("frontend", "users", 2.0, 0.97),
            edge("batch", "catalog", 1.0),
        ],
        "faults": [{"service": "catalog"}],
    }
    lines = graph(status).plain.splitlines()
    assert lines == [
        "batch",
        "└─ 1.0/s 100.0% ─▶ catalog ⚡ fault",
        "   └─ 19.0/s 100.0% ─▶ pricing open (retry in 12s)",
        "",
        "ingress",
        "└─ 20.0/s 100.0% ─▶ frontend",
        "   ├─ 20.0/s 90.0% ─▶ catalog ⚡ fault  … (its calls above)",
        "   └─ 2.0/s 97.0% ─▶ users",
        "",
    ]


def test_a_cycle_nobody_enters_is_still_drawn() -> None:
    status = {"edges": [edge("a", "b"), edge("b", "a")], "faults": []}
    lines = graph(status).plain.splitlines()
    assert lines[:3] == [
        "a",
        "└─ 10.0/s 100.0% ─▶ b",
        "   └─ 10.0/s 100.0% ─▶ a  … (its calls above)",
    ]


def test_edges_are_coloured_by_their_errors() -> None:
    assert edge_style(1.0) == "green"
    assert edge_style(0.97) == "yellow"
    assert edge_style(0.5) == "bold red"
    assert edge_style(None) == "dim"


def test_what_services_and_callers_wrote_is_never_read_as_markup() -> None:
    from io import StringIO

    from rich.console import Console

    from devmesh.cli.output import tap_line, trace_table
    from tui.tapview import row_cells

    path = "/x/[/b][bold]/[id]"
    request = {
        "ts": 1.0,
        "source": "frontend",
        "destination": "catalog",
        "method": "GET",
        "path": path,
        "status": 404,
        "latency_ms": 1.0,
        "version": "v1",
        "instance": "catalog-v1-1",
        "trace_id": "ab" * 16,
    }
    assert path in row_cells(request)[2].plain
    out = Console(file=StringIO(), width=200)
    out.print(tap_line(request))
    trace = {
        "trace_id": "ab" * 16,
        "start": 1.0,
        "root": f"ingress → frontend GET {path}",
        "status": 404,
        "failed": False,
        "duration_ms": 1.0,
        "spans": 2,
        "faults": [],
    }
    out.print(trace_table([trace]))
    assert out.file.getvalue().count("[/b][bold]") == 2  # type: ignore[attr-defined]
