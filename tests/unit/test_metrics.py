"""devmesh.controlplane.metrics: rps, success rate and latency percentiles from records."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from devmesh.controlplane.metrics import (
    WINDOW_S,
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


def test_series_view_of_records_in_the_window() -> None:
    series = Series()
    for i in range(20):
        series.add(T0 + i * 0.25, latency_ms=10.0, error=i % 4 == 0)
    view = series.view(now=T0 + 5)
    assert (view.requests, view.errors) == (20, 5)
    assert view.rps == pytest.approx(20 / WINDOW_S)
    assert view.success_rate == pytest.approx(0.75)
    assert view.p50_ms == pytest.approx(10.0, rel=RELATIVE_ERROR_BOUND)
    assert view.p99_ms == pytest.approx(10.0, rel=RELATIVE_ERROR_BOUND)


def test_records_older_than_the_window_count_only_in_the_totals() -> None:
    series = Series()
    series.add(T0, latency_ms=500.0, error=True)
    series.add(T0 + WINDOW_S + 1, latency_ms=5.0, error=False)
    series.add(T0 + 0.5, latency_ms=500.0, error=True)  # late, and already out of the window
    view = series.view(now=T0 + WINDOW_S + 1)
    assert (view.requests, view.errors) == (3, 2)
    assert view.rps == pytest.approx(1 / WINDOW_S)
    assert view.success_rate == 1.0
    assert view.p99_ms == pytest.approx(5.0, rel=RELATIVE_ERROR_BOUND)


def test_the_window_covers_the_last_window_s_seconds_up_to_now() -> None:
    series = Series()
    series.add(T0 + 0.9, latency_ms=1.0, error=False)
    assert series.view(now=T0 + WINDOW_S - 0.01).rps == pytest.approx(1 / WINDOW_S)
    later = series.view(now=T0 + WINDOW_S)
    assert later.rps == 0.0
    assert later.success_rate is None
    assert later.p50_ms is None
    assert later.requests == 1


def test_records_arriving_out_of_order_within_the_window_all_count() -> None:
    series = Series()
    for offset in (5.0, 9.5, 1.2, 7.0, 0.1, 9.9, 3.3):
        series.add(T0 + offset, latency_ms=offset * 10 + 1, error=offset < 2)
    view = series.view(now=T0 + 9.9)
    assert view.rps == pytest.approx(7 / WINDOW_S)
    assert view.success_rate == pytest.approx(5 / 7)
    assert view.p99_ms == pytest.approx(100.0, rel=RELATIVE_ERROR_BOUND)


def test_an_empty_series_has_no_rates() -> None:
    view = Series().view(now=T0)
    assert (view.requests, view.errors, view.rps) == (0, 0, 0.0)
    assert view.success_rate is None
    assert view.p50_ms is None


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
