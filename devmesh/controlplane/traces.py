"""Traces: the spans sidecars report, gathered per W3C trace, and their OTLP/JSON form.

Every request through a sidecar is a span of its trace: the calling sidecar's
is a client span (the hop, network and callee included), the called sidecar's
a server span (the app's own time), whose id the app sees as its parent in
``traceparent``; an app that passes ``traceparent`` on to its own calls (as
with Istio and Linkerd, the one thing the app must do) links them into one
tree across services.

The store keeps the latest ``MAX_TRACES`` traces of at most ``MAX_SPANS`` spans
each, so its memory is bounded whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from devmesh import payloads

MAX_TRACES = 2000
MAX_SPANS = 256

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_ERROR = 2


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: Literal["client", "server"]
    """``client`` (the caller's sidecar) or ``server`` (the callee's)."""
    service: str
    """The service whose sidecar made the span."""
    source: str
    destination: str
    instance: str
    version: str
    method: str
    path: str
    status: int
    start: float
    """Wall-clock seconds since the epoch."""
    duration_ms: float
    error: str | None
    fault: str | None
    retries: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Span | None:
        """The span of a valid telemetry record, if it has one."""
        trace, span = record.get("trace_id"), record.get("span_id")
        if not (isinstance(trace, str) and isinstance(span, str)):
            return None
        parent = record.get("parent_id")
        client = record["direction"] == "outbound"
        latency = float(record["latency_ms"])
        retries = record.get("retries")
        return cls(
            trace_id=trace,
            span_id=span,
            parent_id=parent if isinstance(parent, str) else None,
            kind="client" if client else "server",
            service=record["source"] if client else record["destination"],
            source=record["source"],
            destination=record["destination"],
            instance=record["instance"],
            version=record["version"],
            method=str(record.get("method", "")),
            path=str(record.get("path", "")),
            status=record["status"],
            start=float(record["ts"]) - latency / 1000.0,
            duration_ms=latency,
            error=record["error"],
            fault=record.get("fault") if isinstance(record.get("fault"), str) else None,
            retries=retries if isinstance(retries, int) else 0,
        )

    @property
    def failed(self) -> bool:
        return self.status >= 500 or (self.error is not None and self.error != "downstream-reset")

    def to_json(self) -> payloads.Span:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "kind": self.kind,
            "service": self.service,
            "source": self.source,
            "destination": self.destination,
            "instance": self.instance,
            "version": self.version,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "start": self.start,
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
            "fault": self.fault,
            "retries": self.retries,
        }


@dataclass
class Trace:
    trace_id: str
    spans: list[Span] = field(default_factory=list)
    truncated: int = 0
    """Spans not kept because the trace had ``MAX_SPANS`` already."""

    def summary(self) -> payloads.TraceSummary:
        ids = {s.span_id for s in self.spans}
        roots = [s for s in self.spans if s.parent_id not in ids] or self.spans
        root = min(roots, key=lambda s: s.start)
        start = min(s.start for s in self.spans)
        end = max(s.start + s.duration_ms / 1000.0 for s in self.spans)
        return {
            "trace_id": self.trace_id,
            "start": start,
            "duration_ms": round((end - start) * 1000.0, 3),
            "spans": len(self.spans),
            "root": f"{root.source} → {root.destination} {root.method} {root.path}",
            "status": root.status,
            "failed": any(s.failed for s in self.spans),
            "faults": sorted({s.fault for s in self.spans if s.fault}),
        }

    def to_json(self) -> payloads.Trace:
        return {
            **self.summary(),
            "truncated": self.truncated,
            "span_list": [s.to_json() for s in sorted(self.spans, key=lambda s: s.start)],
        }


class TraceStore:
    """The latest traces, by id: the least recently touched one goes first when full."""

    def __init__(self, max_traces: int = MAX_TRACES, max_spans: int = MAX_SPANS) -> None:
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._max_traces = max_traces
        self._max_spans = max_spans

    def __len__(self) -> int:
        return len(self._traces)

    @property
    def capacity(self) -> int:
        return self._max_traces

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            span = Span.of(record)
            if span is None:
                continue
            trace = self._traces.get(span.trace_id)
            if trace is None:
                trace = self._traces[span.trace_id] = Trace(span.trace_id)
                if len(self._traces) > self._max_traces:
                    self._traces.popitem(last=False)
            else:
                self._traces.move_to_end(span.trace_id)
            if len(trace.spans) >= self._max_spans:
                trace.truncated += 1
            else:
                trace.spans.append(span)

    def get(self, trace_id: str) -> Trace | None:
        return self._traces.get(trace_id.lower())

    def find(self, prefix: str) -> list[Trace]:
        """Traces whose id starts with ``prefix`` (a user may paste a short one)."""
        prefix = prefix.lower()
        return [t for i, t in self._traces.items() if i.startswith(prefix)]

    def recent(
        self, limit: int = 20, service: str | None = None, failed: bool = False
    ) -> list[Trace]:
        """The latest traces first, those touching ``service``, or with a failure."""
        found = []
        for trace in reversed(self._traces.values()):
            if service is not None and not any(
                service in (s.source, s.destination) for s in trace.spans
            ):
                continue
            if failed and not any(s.failed for s in trace.spans):
                continue
            found.append(trace)
            if len(found) >= limit:
                break
        return found


def to_otlp(traces: Iterable[Trace]) -> payloads.Otlp:
    """OTLP/JSON (an ``ExportTraceServiceRequest``): one resource per service, ids in hex,
    times as nanosecond strings, as OpenTelemetry's JSON encoding says."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        for span in trace.spans:
            by_service.setdefault(span.service, []).append(_otlp_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attribute("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "devmesh"}, "spans": spans}],
            }
            for service, spans in sorted(by_service.items())
        ]
    }


def _otlp_span(span: Span) -> dict[str, Any]:
    start = int(span.start * 1e9)
    attributes = [
        _attribute("http.request.method", span.method),
        _attribute("url.path", span.path),
        _attribute("http.response.status_code", span.status),
        _attribute("devmesh.source", span.source),
        _attribute("devmesh.destination", span.destination),
        _attribute("devmesh.instance", span.instance),
        _attribute("devmesh.version", span.version),
    ]
    if span.retries:
        attributes.append(_attribute("devmesh.retries", span.retries))
    if span.error:
        attributes.append(_attribute("devmesh.error", span.error))
    if span.fault:
        attributes.append(_attribute("devmesh.fault", span.fault))
    data: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": f"{span.method} {span.destination}",
        "kind": SPAN_KIND_CLIENT if span.kind == "client" else SPAN_KIND_SERVER,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(span.duration_ms * 1e6)),
        "attributes": attributes,
        "status": {"code": STATUS_ERROR if span.failed else STATUS_UNSET},
    }
    if span.parent_id:
        data["parentSpanId"] = span.parent_id
    if span.failed:
        data["status"]["message"] = span.error or f"HTTP {span.status}"
    return data


def _attribute(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}
