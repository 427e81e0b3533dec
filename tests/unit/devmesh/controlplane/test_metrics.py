"""devmesh.controlplane.metrics: rps, success rate and latency percentiles from records."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from devmesh.controlplane.metrics import (
    DEFAULT_WINDOW,
    FORGET_AFTER_S,
    HISTORY_S,
    LatencyHistogram,
    Metrics,
    Series,
    is_error,
)

RELATIVE_ERROR_BOUND = 0.01
"""What the module documents for any percentile of latencies above HISTOGRAM_MIN_MS."""


def exact_quantile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q`` of them at or below it."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "lognormal": lambda r: r.lognormvariate(math.log(20.0), 1.0),
    "lognormal-wide": lambda r: r.lognormvariate(0.0, 3.0) + 0.02,
    "uniform": lambda r: r.uniform(0.5, 2000.0),
    "exponential": lambda r: r.expovariate(1 / 50.0) + 0.05,
    "pareto": lambda r: r.paretovariate(1.5),
    "bimodal": lambda r: r.gauss(5.0, 0.5) if r.random() < 0.9 else r.gauss(800.0, 50.0),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_are_within_the_documented_relative_error(name: str) -> None:
    rng = random.Random(name)
    samples = [max(DISTRIBUTIONS[name](rng), 0.011) for _ in range(5000)]
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.add(sample)
    for q in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = exact_quantile(samples, q)
        got = histogram.quantile(q)
        assert got is not None
        error = abs(got - exact) / exact
        assert error <= RELATIVE_ERROR_BOUND, f"q={q}: {got} vs exact {exact} ({error:.4%})"


def test_merged_histograms_answer_as_one_fed_with_everything() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(3.0, 1.0) for _ in range(2000)]
    left, right, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, sample in enumerate(samples):
        (left if i % 3 else right).add(sample)
        whole.add(sample)
    left.merge(right)
    assert left.total == whole.total == len(samples)
    for q in (0.5, 0.9, 0.99):
        assert left.quantile(q) == whole.quantile(q)


def test_weighted_add_counts_as_many_samples() -> None:
    histogram = LatencyHistogram()
    histogram.add(1.0, count=99)
    histogram.add(1000.0)
    assert histogram.total == 100
    assert histogram.quantile(0.99) == pytest.approx(1.0, rel=RELATIVE_ERROR_BOUND)
    assert histogram.quantile(1.0) == pytest.approx(1000.0, rel=RELATIVE_ERROR_BOUND)


@pytest.mark.parametrize("latency", [0.02, 1.0, 37.3, 12_345.0])
def test_a_single_sample_is_every_percentile(latency: float) -> None:
    histogram = LatencyHistogram()
    histogram.add(latency)
    for q in (0.0, 0.5, 0.99, 1.0):
        assert histogram.quantile(q) == pytest.approx(latency, rel=RELATIVE_ERROR_BOUND)


def test_an_empty_histogram_has_no_percentiles() -> None:
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) is None
    assert histogram.quantile(0.99) is None


# -- Series -----------------------------------------------------------------------

T0 = 1_700_000_000.0


def add(series: Series, ts: float, latency_ms: float = 10.0, error: bool = False) -> None:
    series.add(ts, latency_ms, 500 if error else 200, error)


def test_series_view_of_records_in_the_window() -> None:
    series = Series()
    for i in range(20):
        add(series, T0 + i * 0.25, latency_ms=10.0, error=i % 4 == 0)
    view = series.view(now=T0 + 5.5)
    assert (view.requests, view.errors) == (20, 5)
    assert view.rps == pytest.approx(20 / DEFAULT_WINDOW)
    assert view.success_rate == pytest.approx(0.75)
    assert view.p50_ms == pytest.approx(10.0, rel=RELATIVE_ERROR_BOUND)
    assert view.p99_ms == pytest.approx(10.0, rel=RELATIVE_ERROR_BOUND)


def test_windows_are_the_whole_seconds_before_the_current_one() -> None:
    series = Series()
    for offset in (0.5, 7.2, 8.9, 9.1, 9.99):
        add(series, T0 + offset)
    now = T0 + 9.5  # second 9 is still arriving: no window holds it yet
    assert series.view(now, window=1).window.requests == 1  # second 8
    assert series.view(now, window=1).rps == 1.0
    assert series.view(now, window=10).window.requests == 3  # seconds 0 to 8
    assert series.view(now, window=60).window.requests == 3
    assert series.view(T0 + 10.0, window=1).window.requests == 2  # second 9, now whole
    assert series.view(T0 + 10.0, window=1).requests == 5, "totals count everything"


def test_a_window_must_be_one_the_series_keeps() -> None:
    with pytest.raises(ValueError, match="1 to 60 seconds"):
        Series().view(T0, window=61)


def test_records_older_than_the_history_count_only_in_the_totals() -> None:
    series = Series()
    add(series, T0, latency_ms=500.0, error=True)
    add(series, T0 + HISTORY_S + 1, latency_ms=5.0)
    add(series, T0 + 0.5, latency_ms=500.0, error=True)  # late, and already out of the ring
    view = series.view(now=T0 + HISTORY_S + 2, window=60)
    assert (view.requests, view.errors) == (3, 2)
    assert view.window.requests == 1
    assert view.success_rate == 1.0
    assert view.p99_ms == pytest.approx(5.0, rel=RELATIVE_ERROR_BOUND)


def test_a_late_record_does_not_overwrite_a_newer_second_in_its_slot() -> None:
    series = Series()
    add(series, T0 + HISTORY_S)  # the slot of second T0 now holds T0 + HISTORY_S
    add(series, T0 + 0.2)  # a record of second T0 arrives late
    assert series.view(T0 + HISTORY_S + 1, window=1).window.requests == 1


def test_the_window_forgets_what_has_slid_out() -> None:
    series = Series()
    add(series, T0 + 0.9)
    assert series.view(now=T0 + DEFAULT_WINDOW).rps == pytest.approx(1 / DEFAULT_WINDOW)
    later = series.view(now=T0 + DEFAULT_WINDOW + 1)
    assert later.rps == 0.0
    assert later.success_rate is None
    assert later.p50_ms is None
    assert later.requests == 1


def test_records_arriving_out_of_order_within_the_window_all_count() -> None:
    series = Series()
    for offset in (5.0, 9.5, 1.2, 7.0, 0.1, 9.9, 3.3):
        add(series, T0 + offset, latency_ms=offset * 10 + 1, error=offset < 2)
    view = series.view(now=T0 + 10.0)
    assert view.rps == pytest.approx(7 / DEFAULT_WINDOW)
    assert view.success_rate == pytest.approx(5 / 7)
    assert view.p99_ms == pytest.approx(100.0, rel=RELATIVE_ERROR_BOUND)


def test_an_empty_series_has_no_rates() -> None:
    view = Series().view(now=T0)
    assert (view.requests, view.errors, view.rps) == (0, 0, 0.0)
    assert view.success_rate is None
    assert view.p50_ms is None


def test_status_classes_retries_timeouts_and_injected_failures_are_counted_apart() -> None:
    series = Series()
    series.add(T0, 1.0, 200, False, retries=2)
    series.add(T0, 1.0, 404, False)
    series.add(T0, 1.0, 503, True, injected=True)
    series.add(T0, 1.0, 504, True, timeout=True)
    series.add(T0, 1.0, 0, False)  # the caller left before an answer
    view = series.view(T0 + 1, window=1)
    for counts in (view.total, view.window):
        data = counts.to_json()
        assert data["classes"] == {"none": 1, "1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 2}
        assert (data["errors"], data["injected"], data["timeouts"], data["retries"]) == (
            2,
            1,
            1,
            2,
        )


def test_p90_lies_between_p50_and_p99() -> None:
    series = Series()
    for latency in range(1, 101):
        series.add(T0, float(latency), 200, False)
    view = series.view(T0 + 1, window=1)
    assert view.p50_ms == pytest.approx(50.0, rel=RELATIVE_ERROR_BOUND)
    assert view.p90_ms == pytest.approx(90.0, rel=RELATIVE_ERROR_BOUND)
    assert view.p99_ms == pytest.approx(99.0, rel=RELATIVE_ERROR_BOUND)


def test_history_gives_requests_per_second_oldest_first() -> None:
    series = Series()
    for offset, count in ((0.5, 3), (2.5, 1), (59.5, 2)):
        for _ in range(count):
            add(series, T0 + offset, error=offset > 59)
    history = series.history(T0 + 60.2)
    assert len(history["requests"]) == HISTORY_S
    assert history["requests"][0] == 3
    assert history["requests"][2] == 1
    assert history["requests"][-1] == 2
    assert history["errors"][-1] == 2
    assert sum(history["requests"]) == 6


def test_memory_stays_bounded_by_the_ring_whatever_the_traffic() -> None:
    series = Series()
    rng = random.Random(3)
    for i in range(HISTORY_S * 20 * 10):  # 20 minutes of 10 req/s
        add(series, T0 + i / 10, latency_ms=rng.lognormvariate(3.0, 1.0))
    live = [b for b in series._ring if b is not None]  # the bound itself
    assert len(live) == HISTORY_S
    assert series.requests == HISTORY_S * 200


# -- is_error and Metrics.ingest ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, None, False),
        (404, None, False),
        (499, None, False),
        (500, None, True),
        (503, "no-healthy-upstream", True),
        (503, "connect-failure", True),
        (200, "reset", True),
        (200, "downstream-reset", False),
        (0, "downstream-reset", False),
        (502, "downstream-reset", True),
        (408, "body-timeout", False),
    ],
)
def test_is_error(status: int, error: str | None, expected: bool) -> None:
    assert is_error(status, error) is expected


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": T0,
        "direction": "outbound",
        "source": "web",
        "destination": "catalog",
        "version": "v1",
        "instance": "catalog-v1-1",
        "status": 200,
        "latency_ms": 12.0,
        "method": "GET",
        "path": "/items",
        "error": None,
    }
    base.update(changes)
    return base


def test_outbound_records_feed_edges_by_source_and_destination() -> None:
    metrics = Metrics()
    metrics.ingest(
        [
            record(),
            record(instance="catalog-v2-1", status=500),
            record(source="api", destination="catalog"),
            record(source="web", destination="pricing", instance="pricing-1"),
        ]
    )
    assert set(metrics.edges) == {("web", "catalog"), ("api", "catalog"), ("web", "pricing")}
    web_catalog = metrics.edges["web", "catalog"]
    assert (web_catalog.requests, web_catalog.errors) == (2, 1)
    assert metrics.instances == {}


def test_inbound_records_feed_instances() -> None:
    metrics = Metrics()
    metrics.ingest(
        [
            record(direction="inbound"),
            record(direction="inbound", error="reset"),
            record(direction="inbound", instance="catalog-v2-1", error="downstream-reset"),
        ]
    )
    assert metrics.edges == {}
    assert set(metrics.instances) == {"catalog-v1-1", "catalog-v2-1"}
    v1 = metrics.instances["catalog-v1-1"]
    assert (v1.requests, v1.errors) == (2, 1)
    v2 = metrics.instances["catalog-v2-1"]
    assert (v2.requests, v2.errors) == (1, 0)


@pytest.mark.parametrize(
    "bad",
    [
        "not a record",
        None,
        [],
        record(direction="sideways"),
        record(status="200"),
        record(ts="now"),
        record(latency_ms=None),
        record(source=1),
        record(error=5),
        {k: v for k, v in record().items() if k != "instance"},
        {k: v for k, v in record().items() if k != "destination"},
    ],
)
def test_malformed_records_are_counted_and_skipped(bad: object) -> None:
    metrics = Metrics()
    metrics.ingest([bad, record()], dropped=3)
    assert metrics.malformed == 1
    assert metrics.dropped == 3
    assert metrics.edges["web", "catalog"].requests == 1


def test_ingest_adds_up_dropped_counts_across_batches() -> None:
    metrics = Metrics()
    metrics.ingest([], dropped=2)
    metrics.ingest([record()], dropped=5)
    assert metrics.dropped == 7
    assert metrics.malformed == 0


def test_outbound_records_also_feed_services_and_versions() -> None:
    metrics = Metrics()
    metrics.ingest(
        [
            record(),
            record(source="api", version="v2", instance="catalog-v2-1"),
            record(version="", instance="", status=503, error="no-healthy-upstream"),
        ]
    )
    assert metrics.services["catalog"].requests == 3
    assert metrics.versions["catalog", "v1"].requests == 1
    assert metrics.versions["catalog", "v2"].requests == 1
    assert ("catalog", "") not in metrics.versions, "a request that reached no version"


def test_ingest_returns_the_valid_records_and_counts_them() -> None:
    metrics = Metrics()
    valid = metrics.ingest([record(), "junk", record(direction="inbound")])
    assert len(valid) == 2
    assert metrics.records == 2


def test_idle_series_are_forgotten() -> None:
    metrics = Metrics()
    metrics.ingest([record(ts=T0), record(ts=T0 + 100, destination="pricing")])
    assert metrics.forget_idle(T0 + FORGET_AFTER_S + 50) == 3  # catalog: edge, service, v1
    assert set(metrics.edges) == {("web", "pricing")}
    assert set(metrics.services) == {"pricing"}


def test_the_windows_latencies_are_binned_for_display() -> None:
    series = Series()
    for latency in (0.5, 0.9, 3.0, 70.0, 9_000.0):
        series.add(T0, latency, 200, False)
    data = series.view(T0 + 1, window=1).to_json()
    bins = dict((bound, count) for bound, count in data["latency_bins"])
    assert bins[1.0] == 2
    assert bins[5.0] == 1
    assert bins[100.0] == 1
    assert bins[None] == 1, "above the last bound"
    assert sum(bins.values()) == 5
