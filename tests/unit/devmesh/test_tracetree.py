"""devmesh.tracetree: the one trace tree `devmesh trace` and the TUI's trace view draw."""

from __future__ import annotations

from io import StringIO
from typing import Any

from rich.console import Console

from devmesh.tracetree import trace_tree
from tests.tui.fixed_source import TRACE


def drawn(trace: dict[str, Any]) -> list[str]:
    out = StringIO()
    Console(file=out, width=160, color_system=None).print(trace_tree(trace))
    return out.getvalue().splitlines()


def test_each_span_is_under_its_parent_in_the_order_they_began() -> None:
    lines = drawn(TRACE)
    assert lines[0].startswith(f"trace {TRACE['trace_id']}  7.3ms, 4 spans")
    hops = [line.strip(" │└├─") for line in lines[1:]]
    assert [hop.split("  ")[0] for hop in hops] == [
        "ingress → frontend GET / 200",
        "frontend (frontend-1) GET / 200",
        "frontend → catalog GET /items 200",
        "catalog (catalog-v2-1) GET /items 200",
    ]
    assert [len(line) - len(line.lstrip(" │└├─")) for line in lines[1:]] == [4, 8, 12, 16]
    assert "⚡ fault f1 injected here" in hops[2]
    assert "to catalog-v2-1" in hops[2]


def test_a_span_whose_parent_was_not_kept_hangs_from_the_root_and_cuts_are_said() -> None:
    orphan = {**TRACE["span_list"][3], "parent_id": "gone", "path": "/[bold]x"}
    lines = drawn({**TRACE, "span_list": [orphan], "spans": 1, "truncated": 3})
    assert lines[1].startswith("├── catalog (catalog-v2-1) GET /[bold]x 200"), "no markup read"
    assert lines[-1].endswith("… 3 more spans not kept")
