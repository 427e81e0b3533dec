"""A request's trace as a tree of its spans (``devmesh trace ID`` and the TUI's trace view
draw the same one): each hop, its status and time, when it began after the first span,
the instance it reached, and where a fault was injected."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from devmesh import payloads
from devmesh.statetext import status_text


def trace_tree(trace: payloads.Trace) -> Tree:
    """The trace's spans, each under the span that made it (those whose parent is not kept
    under the root), in the order they began."""
    spans = trace["span_list"]
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[payloads.Span]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    start = float(trace["start"])
    root = Tree(
        Text(f"trace {trace['trace_id']}", style="bold")
        + Text(f"  {trace['duration_ms']:.1f}ms, {trace['spans']} spans", style="dim")
    )

    def grow(node: Tree, parent: str | None) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start"]):
            grow(node.add(span_line(span, start)), span["span_id"])

    grow(root, None)
    if trace.get("truncated"):
        root.add(Text(f"… {trace['truncated']} more spans not kept", style="dim"))
    return root


def span_line(span: payloads.Span, trace_start: float) -> Text:
    """One hop: who called whom (or which instance served it), the request, its status, its
    time, when it began, and its retries, error and fault."""
    offset = (span["start"] - trace_start) * 1000.0
    if span["kind"] == "client":
        line = Text(f"{span['source']} → {span['destination']} ", style="cyan")
    else:
        line = Text(f"{span['destination']} ({span['instance']}) ", style="bold cyan")
    line += Text(f"{span['method']} {span['path']} ")
    line += status_text(int(span["status"]))
    line += Text(f"  {span['duration_ms']:.1f}ms", style="bold")
    line += Text(f"  at +{offset:.1f}ms", style="dim")
    if span["kind"] == "client" and span.get("instance"):
        line += Text(f"  to {span['instance']}", style="dim")
    if span.get("retries"):
        line += Text(f"  retries={span['retries']}", style="yellow")
    if span.get("error"):
        line += Text(f"  error={span['error']}", style="red")
    if span.get("fault"):
        line += Text(f"  ⚡ fault {span['fault']} injected here", style="bold magenta")
    return line
