"""Live telemetry through real sidecars: the control plane's numbers against a client's own,
the event and tap streams, and ``/metrics`` read by Prometheus' own parser. The sidecars run
as processes (``$DEVMESH_DATAPLANE`` picks which), apart from the test's event loop."""

from __future__ import annotations

import asyncio
import base64
import copy
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from devmesh.errors import UsageError
from tests.integration.meshkit import (
    ControlPlane,
    SidecarProcess,
    endpoints_held,
    serve,
    sidecar_process,
    snapshot_held,
    wait_until,
)

APP_TIME = 0.05
"""What the test app takes at least per request: the mesh's own cost is small beside it."""


@asynccontextmanager
async def slow_app(status: int = 200, spread: float = 0.0) -> AsyncIterator[int]:
    """An app that answers after ``APP_TIME`` (plus up to ``spread`` seconds, at random),
    ``status`` for every path but ``/ok``."""
    rng = random.Random(11)

    async def handle(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(APP_TIME + rng.uniform(0.0, spread))
        return web.Response(status=200 if request.path == "/ok" else status, text="answer")

    async with serve(handle) as port:
        yield port


@asynccontextmanager
async def frontend_to_catalog(
    plane: ControlPlane, status: int = 200, spread: float = 0.0
) -> AsyncIterator[SidecarProcess]:
    """catalog-v1-1 behind its sidecar, and frontend-1's sidecar once it can reach it."""
    async with (
        slow_app(status, spread) as port,
        sidecar_process(plane, "catalog-v1-1", "catalog", "v1", port),
        sidecar_process(plane, "frontend-1", "frontend", "default", None) as frontend,
        plane.client() as client,
    ):

        async def knows_catalog() -> bool:
            return await endpoints_held(plane, client, "frontend-1", "catalog") == {"catalog-v1-1"}

        await wait_until(knows_catalog, "the frontend's sidecar knows the catalog instance")
        yield frontend


async def send(
    session: aiohttp.ClientSession, frontend: SidecarProcess, path: str = "/items"
) -> tuple[int, float]:
    """One request from the frontend's app to catalog: its status and latency (ms)."""
    port = frontend.outbound
    started = time.perf_counter()
    async with session.get(
        f"http://127.0.0.1:{port}{path}", headers={"Host": "catalog"}
    ) as response:
        await response.read()
        return response.status, (time.perf_counter() - started) * 1000.0


async def load(
    frontend: SidecarProcess, count: int, concurrency: int = 50
) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    todo = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in todo:
                results.append(await send(session, frontend))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def nearest_rank(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def served_by(status: dict[str, Any], instance: str = "catalog-v1-1") -> int:
    """The requests ``instance``'s sidecar reported as served by its app."""
    (entry,) = [i for s in status["services"] for i in s["instances"] if i["id"] == instance]
    return int(entry["served"]["requests"]) if entry["served"] else 0


def catalog_edge(status: dict[str, Any]) -> dict[str, Any]:
    (edge,) = [
        e for e in status["edges"] if (e["source"], e["destination"]) == ("frontend", "catalog")
    ]
    return edge


async def test_the_control_plane_agrees_with_the_clients_own_measurements(
    controlplane: ControlPlane,
) -> None:
    requests = 2000
    # The app's time spread over 50-250 ms: no percentile sits on the edge of a cluster of
    # equal latencies, where one rank more or less would jump tens of milliseconds.
    async with (
        frontend_to_catalog(controlplane, spread=0.2) as frontend,
        controlplane.client() as client,
    ):
        # Plaintext between the sidecars here, as when they shared this test's event loop:
        # with mTLS, in two full runs of the suite (never alone) the client's p99 came out
        # 40-50 ms above the mesh's then, most likely the 50 handshakes its 50 connections
        # opened at once stalling the shared loop, outside every sidecar's clock. What mTLS
        # costs is measured in bench/.
        await client.set_mtls("catalog", "off")
        await client.add_fault(
            "catalog",
            {
                "delay": {"fixed": "100ms", "percent": 50},
                "abort": {"http_status": 503, "percent": 20},
            },
        )

        async def applied() -> bool:
            held = await snapshot_held(controlplane, client, "frontend-1")
            route = held.routes.get("catalog") if held is not None else None
            return route is not None and bool(route.policy.faults) and route.mtls == "off"

        await wait_until(applied, "the fault and the mode reached the frontend's sidecar")
        results = await load(frontend, requests)

        async def in_the_window() -> bool:
            # Windows hold whole seconds: this waits for the last request's to end too.
            edge = catalog_edge(await client.status(window=60))
            return bool(edge["window"]["requests"] == requests)

        await wait_until(in_the_window, f"the minute's window holds all {requests} requests")
        edge = catalog_edge(await client.status(window=60))

    statuses = [status for status, _ in results]
    latencies = [latency for _, latency in results]
    failed = statuses.count(503)
    assert 0.17 < failed / requests < 0.23, "the fault is in force (20 % aborts)"
    assert edge["requests"] == requests
    assert edge["errors"] == failed
    assert edge["injected"] == failed, "every failure was injected, and counted as such"
    assert edge["classes"]["2xx"] == statuses.count(200)
    assert edge["classes"]["5xx"] == failed
    assert abs((1 - edge["success_rate"]) - failed / requests) <= 0.01
    for q, name in ((0.5, "p50_ms"), (0.99, "p99_ms")):
        mine = nearest_rank(latencies, q)
        assert edge[name] == pytest.approx(mine, rel=0.10), f"{name}: {edge[name]} vs {mine}"


async def test_the_event_stream_sends_a_status_each_second_and_changes_as_they_happen(
    controlplane: ControlPlane,
) -> None:
    async with (
        frontend_to_catalog(controlplane, status=500) as frontend,
        controlplane.client() as client,
    ):
        events = client.events(window=1)
        first = await anext(events)
        assert first["type"] == "status"
        assert first["window_s"] == 1
        assert [s["name"] for s in first["services"]] == ["frontend", "catalog"]

        await client.set_split("catalog", {"v1": 100})
        config = await _next_of(events, "config")
        assert config["version"] == controlplane.mesh.snapshot.version

        async with aiohttp.ClientSession() as session:
            for _ in range(5):  # five 5xx in a row: Envoy's default ejects the endpoint
                assert (await send(session, frontend))[0] == 500
        breaker = await _next_of(events, "breaker")
        assert (breaker["source"], breaker["destination"]) == ("frontend", "catalog")
        assert (breaker["was"], breaker["state"]) == ("closed", "open")
        assert breaker["endpoint"] == "catalog-v1-1"
        assert "5 consecutive 5xx" in breaker["reason"]
        assert breaker["ejections"] == 1

        ticked = await _next_of(events, "status")
        edge = catalog_edge(ticked)
        assert edge["breaker"]["state"] == "open"
        assert len(edge["history"]["requests"]) == 60
        await events.aclose()


async def _next_of(events: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for event in events:
            if event["type"] == kind:
                return event
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), timeout=10.0)


async def test_the_tap_shows_matching_requests_and_counts_what_it_samples_out(
    controlplane: ControlPlane,
) -> None:
    async with (
        frontend_to_catalog(controlplane, status=503) as frontend,
        controlplane.client() as client,
    ):
        tap = client.tap(status="5xx", path="/items", rate=5)
        ready = asyncio.Event()
        seen: list[dict[str, Any]] = []
        stats: list[dict[str, Any]] = []

        async def read() -> None:
            ready.set()
            async for message in tap:
                (seen if message["type"] == "request" else stats).append(message)

        reader = asyncio.create_task(read())
        await ready.wait()
        await wait_until(
            lambda: bool(controlplane.api and controlplane.api.tap.subscribers), "the tap is on"
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                assert (await send(session, frontend, "/ok"))[0] == 200  # filtered out: 200
            for _ in range(40):
                assert (await send(session, frontend))[0] == 503
        await wait_until(
            lambda: bool(stats) and stats[-1]["matched"] == 40,
            "the tap's stats count every matching request",
            within=15,
        )
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await tap.aclose()

    last = stats[-1]
    assert {m["status"] for m in seen} == {503}
    assert {m["path"] for m in seen} == {"/items"}
    assert len(seen) + last["sampled_out"] == 40, "each matching request shown or counted"
    assert len(seen) < 40, "at 5 a second, 40 quick requests cannot all be shown"
    first = seen[0]
    assert (first["source"], first["destination"], first["instance"]) == (
        "frontend",
        "catalog",
        "catalog-v1-1",
    )
    assert len(first["trace_id"]) == 32
    assert first["latency_ms"] > 0


async def test_a_bad_tap_filter_is_refused_with_a_sentence(controlplane: ControlPlane) -> None:
    async with controlplane.client() as client:
        with pytest.raises(UsageError, match="not a status"):
            await anext(client.tap(status="5zz"))
        with pytest.raises(UsageError, match="window must be one of 1, 10, 60"):
            await client.status(window=7)


async def test_metrics_are_served_in_prometheus_text_format(controlplane: ControlPlane) -> None:
    async with frontend_to_catalog(controlplane) as frontend, controlplane.client() as client:
        async with aiohttp.ClientSession() as session:
            for _ in range(12):
                await send(session, frontend)

        async def counted() -> bool:
            # Each sidecar reports on its own: the caller's records and the callee's apart.
            status = await client.status()
            return catalog_edge(status)["requests"] == 12 and served_by(status) == 12

        await wait_until(counted, "the control plane counted 12 requests, at both ends")
        text = await client.metrics_text()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    edge = {"source": "frontend", "destination": "catalog"}

    def value(family: str, sample: str, **labels: str) -> float:
        found = [
            s.value for s in families[family].samples if s.name == sample and s.labels == labels
        ]
        assert len(found) == 1, (family, sample, labels, families[family].samples)
        return found[0]

    assert families["devmesh_requests"].type == "counter"
    assert value("devmesh_requests", "devmesh_requests_total", **edge, status_class="2xx") == 12
    histogram = families["devmesh_request_duration_seconds"]
    assert histogram.type == "histogram"
    count = value(
        "devmesh_request_duration_seconds", "devmesh_request_duration_seconds_count", **edge
    )
    assert count == 12
    assert (
        value(
            "devmesh_request_duration_seconds",
            "devmesh_request_duration_seconds_bucket",
            **edge,
            le="+Inf",
        )
        == 12
    )
    assert (
        value(
            "devmesh_request_duration_seconds",
            "devmesh_request_duration_seconds_bucket",
            **edge,
            le="0.01",
        )
        == 0
    ), "the app takes 50 ms"
    assert (
        value("devmesh_request_duration_seconds", "devmesh_request_duration_seconds_sum", **edge)
        >= 12 * APP_TIME
    )
    assert value("devmesh_breaker_state", "devmesh_breaker_state", **edge, state="closed") == 1
    assert value("devmesh_breaker_state", "devmesh_breaker_state", **edge, state="open") == 0
    assert value("devmesh_breaker_panic", "devmesh_breaker_panic", **edge) == 0
    served = value(
        "devmesh_instance_requests",
        "devmesh_instance_requests_total",
        instance="catalog-v1-1",
        status_class="2xx",
    )
    assert served == 12
    assert families["devmesh_telemetry_records"].samples[0].value >= 24


async def test_a_breaker_in_panic_shows_in_status_and_metrics(controlplane: ControlPlane) -> None:
    # catalog's only instance fails: ejected, yet still routed to (Envoy's panic threshold).
    async with (
        frontend_to_catalog(controlplane, status=500) as frontend,
        controlplane.client() as client,
    ):
        async with aiohttp.ClientSession() as session:
            for _ in range(6):
                assert (await send(session, frontend))[0] == 500, "the app's, not breaker-open"

        async def in_panic() -> bool:
            return bool(catalog_edge(await client.status())["breaker"].get("panic"))

        await wait_until(in_panic, "the status to show the breaker in panic")
        breaker = catalog_edge(await client.status())["breaker"]
        assert (breaker["state"], breaker["ejected"], breaker["total"]) == ("open", 1, 1)
        text = await client.metrics_text()
    (panic,) = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == "devmesh_breaker_panic"
        for s in f.samples
        if s.labels == {"source": "frontend", "destination": "catalog"}
    ]
    assert panic.value == 1


async def test_metrics_need_the_project_token(controlplane: ControlPlane) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(controlplane.url + "/metrics") as response,
    ):
        assert response.status == 401


# -- traces -------------------------------------------------------------------------------


@asynccontextmanager
async def frontend_app(outbound: list[int]) -> AsyncIterator[int]:
    """A frontend that calls catalog through its sidecar (``outbound[0]``) and passes the
    ``traceparent`` it got on, as an app must for its calls to join the request's trace."""

    async def handle(request: web.BaseRequest) -> web.Response:
        headers = {"Host": "catalog", "traceparent": request.headers["traceparent"]}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{outbound[0]}/items", headers=headers) as answer,
        ):
            return web.Response(status=answer.status, text=await answer.text())

    async with serve(handle) as port:
        yield port


async def test_a_trace_shows_each_hop_across_services_and_exports_as_otlp(
    controlplane: ControlPlane,
) -> None:
    outbound: list[int] = []
    async with (
        slow_app() as catalog_port,
        frontend_app(outbound) as frontend_port,
        sidecar_process(controlplane, "catalog-v1-1", "catalog", "v1", catalog_port),
        sidecar_process(
            controlplane, "frontend-1", "frontend", "default", frontend_port
        ) as frontend,
        controlplane.client() as client,
    ):
        outbound.append(frontend.outbound)
        await client.add_fault("catalog", {"delay": "30ms"})

        async def with_the_fault() -> bool:
            held = await snapshot_held(controlplane, client, "frontend-1")
            route = held.routes.get("catalog") if held is not None else None
            return route is not None and bool(route.policy.faults)

        await wait_until(with_the_fault, "the frontend's sidecar routes to catalog, with the fault")
        incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{frontend.inbound}/shop",
                headers={"traceparent": incoming},
            ) as response,
        ):
            assert response.status == 200

        async def complete() -> bool:
            found = await client.traces(service="catalog")
            return bool(found) and found[0]["spans"] == 3

        await wait_until(complete, "the trace has its three spans")
        (summary,) = await client.traces()
        trace = await client.trace(summary["trace_id"][:8])  # a short id is enough
        otlp = await client.otlp(summary["trace_id"])

    assert trace["trace_id"] == "0af7651916cd43dd8448eb211c80319c", "the caller's trace"
    server, call, callee = trace["span_list"]  # in order of start
    assert (server["kind"], server["service"], server["parent_id"]) == (
        "server",
        "frontend",
        "b7ad6b7169203331",
    )
    assert (call["kind"], call["source"], call["destination"]) == ("client", "frontend", "catalog")
    assert call["parent_id"] == server["span_id"], "the app passed traceparent on"
    assert (callee["kind"], callee["service"]) == ("server", "catalog")
    assert callee["parent_id"] == call["span_id"]
    assert call["fault"] is not None, "the fault is marked on the call it delayed"
    assert callee["fault"] is None
    assert call["duration_ms"] >= 30 + APP_TIME * 1000
    assert callee["duration_ms"] < call["duration_ms"] <= server["duration_ms"]
    assert summary["faults"] == [call["fault"]]

    # OTLP/JSON writes ids in hex where protobuf's JSON mapping has base64: turn them back.

    wire = copy.deepcopy(otlp)
    for resource in wire["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    parsed = json_format.ParseDict(wire, ExportTraceServiceRequest())  # refuses unknown fields
    spans = [s for r in parsed.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert len(spans) == 3
    assert {s.trace_id.hex() for s in spans} == {trace["trace_id"]}
    services = {
        r.resource.attributes[0].value.string_value: len(r.scope_spans[0].spans)
        for r in parsed.resource_spans
    }
    assert services == {"frontend": 2, "catalog": 1}
    kinds = sorted(s.kind for s in spans)
    assert kinds == [2, 2, 3], "two server spans, one client span"
    assert all(s.end_time_unix_nano > s.start_time_unix_nano > 0 for s in spans)
