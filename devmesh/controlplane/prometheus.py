"""The mesh's numbers in Prometheus' text exposition format (version 0.0.4), for ``/metrics``.

Counters and histograms are totals since the control plane started (Prometheus
computes rates itself); a series forgotten after ``FORGET_AFTER_S`` without
traffic disappears, which Prometheus reads as the end of that series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from devmesh.controlplane import statusview
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.metrics import PROMETHEUS_BUCKETS_S, STATUS_CLASSES, Series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BREAKER_STATES = ("closed", "open", "half-open")


def render(mesh: Mesh, now: float | None = None) -> str:
    """Every metric of ``mesh``, as one exposition."""
    now = time.time() if now is None else now
    return "".join(f"{line}\n" for line in _lines(mesh, now))


def _lines(mesh: Mesh, now: float) -> Iterator[str]:
    metrics = mesh.metrics
    edges = sorted(metrics.edges.items())
    instances = sorted(metrics.instances.items())

    yield from _header(
        "devmesh_requests_total",
        "counter",
        "Requests between services, counted once by the caller's sidecar, by status class "
        "(none: no status was sent).",
    )
    for (source, destination), series in edges:
        for name, count in zip(STATUS_CLASSES, series.total.classes, strict=True):
            if count:
                labels = _labels(source=source, destination=destination, status_class=name)
                yield f"devmesh_requests_total{labels} {count}"
    counters = (
        ("devmesh_request_errors_total", "errors", "Failed requests (5xx, or cut short)."),
        (
            "devmesh_injected_errors_total",
            "injected",
            "Of the failed requests, those an injected fault caused.",
        ),
        ("devmesh_retries_total", "retries", "Attempts beyond the first."),
        ("devmesh_timeouts_total", "timeouts", "Requests that ended in the route's timeout."),
    )
    for metric, attribute, text in counters:
        yield from _header(metric, "counter", text)
        for (source, destination), series in edges:
            value = getattr(series.total, attribute)
            yield f"{metric}{_labels(source=source, destination=destination)} {value}"

    yield from _header(
        "devmesh_request_duration_seconds",
        "histogram",
        "Time from the caller's sidecar receiving a request to its answer's end.",
    )
    for (source, destination), series in edges:
        yield from _histogram(
            "devmesh_request_duration_seconds", series, source=source, destination=destination
        )

    breakers = {key: statusview.breaker(mesh, *key, now) for key, _ in edges}
    yield from _header(
        "devmesh_breaker_state",
        "gauge",
        "The breaker of each edge, one series per state: 1 for the state it is in.",
    )
    for (source, destination), breaker in breakers.items():
        state = breaker.get("state", "closed")
        for name in BREAKER_STATES:
            labels = _labels(source=source, destination=destination, state=name)
            yield f"devmesh_breaker_state{labels} {int(state == name)}"
    yield from _header(
        "devmesh_breaker_panic",
        "gauge",
        "1 while the breaker of the edge is in panic: too few of its instances are healthy, "
        "so its callers route to all of them, ejected ones too.",
    )
    for (source, destination), breaker in breakers.items():
        labels = _labels(source=source, destination=destination)
        yield f"devmesh_breaker_panic{labels} {int(bool(breaker.get('panic')))}"
    yield from _header(
        "devmesh_breaker_ejections_total",
        "counter",
        "Endpoints ejected by the outlier detector of each edge, as its callers report.",
    )
    for source, destination in (key for key, _ in edges):
        labels = _labels(source=source, destination=destination)
        yield f"devmesh_breaker_ejections_total{labels} {mesh.ejections(source, destination)}"

    security = sorted(metrics.security.items())
    yield from _header(
        "devmesh_mtls_requests_total",
        "counter",
        "Requests the caller's sidecar sent to an endpoint, by whether they went over mTLS.",
    )
    for (source, destination), edge in security:
        for mtls, count in (("true", edge.mtls), ("false", edge.plaintext)):
            if count:
                labels = _labels(source=source, destination=destination, mtls=mtls)
                yield f"devmesh_mtls_requests_total{labels} {count}"
    yield from _header(
        "devmesh_authz_total",
        "counter",
        "Requests an authorization rule denied (decision=deny, answered 403) or, in audit "
        "mode, would have denied (decision=audit, let through), by rule.",
    )
    for (source, destination), edge in security:
        for key, count in sorted(edge.by_rule.items()):
            decision, _, rule = key.partition(":")
            labels = _labels(source=source, destination=destination, decision=decision, rule=rule)
            yield f"devmesh_authz_total{labels} {count}"

    yield from _header(
        "devmesh_instance_requests_total",
        "counter",
        "Requests each instance served, counted by its own sidecar, by status class.",
    )
    for instance, series in instances:
        for name, count in zip(STATUS_CLASSES, series.total.classes, strict=True):
            if count:
                labels = _labels(instance=instance, status_class=name)
                yield f"devmesh_instance_requests_total{labels} {count}"
    yield from _header(
        "devmesh_instance_request_duration_seconds",
        "histogram",
        "Time each instance's sidecar spent on a request, the app's answer included.",
    )
    for instance, series in instances:
        yield from _histogram(
            "devmesh_instance_request_duration_seconds", series, instance=instance
        )

    telemetry = (
        ("devmesh_telemetry_records_total", metrics.records, "Request records received."),
        (
            "devmesh_telemetry_dropped_total",
            metrics.dropped,
            "Records sidecars dropped because the control plane did not take them in time.",
        ),
        (
            "devmesh_telemetry_malformed_total",
            metrics.malformed,
            "Records received that were not valid.",
        ),
    )
    for metric, value, text in telemetry:
        yield from _header(metric, "counter", text)
        yield f"{metric} {value}"


def _header(name: str, kind: str, text: str) -> Iterator[str]:
    yield f"# HELP {name} {_escape_help(text)}"
    yield f"# TYPE {name} {kind}"


def _histogram(name: str, series: Series, **labels: str) -> Iterator[str]:
    cumulative = 0
    for bound, count in zip(PROMETHEUS_BUCKETS_S, series.latency_buckets, strict=False):
        cumulative += count
        yield f"{name}_bucket{_labels(**labels, le=_number(bound))} {cumulative}"
    yield f"{name}_bucket{_labels(**labels, le='+Inf')} {series.total.requests}"
    yield f"{name}_sum{_labels(**labels)} {_number(series.latency_sum_ms / 1000.0)}"
    yield f"{name}_count{_labels(**labels)} {series.total.requests}"


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
