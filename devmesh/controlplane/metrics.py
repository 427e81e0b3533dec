"""Aggregating sidecar records into the numbers users read: rps, success rate, p50/p99.

Memory is bounded whatever the traffic: each series keeps totals plus a ring
of per-second buckets covering ``WINDOW_S`` seconds, and each bucket holds a
sparse log-bucketed latency histogram, never a list of requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 10
"""rps, success rate and percentiles describe the last ``WINDOW_S`` seconds."""

HISTOGRAM_GAMMA = 1.02
"""Bucket ``i`` holds latencies in ``(gamma**(i-1), gamma**i]`` ms. Reporting a
bucket's geometric midpoint bounds the relative error of any percentile by
``(gamma - 1) / 2`` = 1 % (for latencies above ``HISTOGRAM_MIN_MS``)."""
HISTOGRAM_MIN_MS = 0.01
_LOG_GAMMA = math.log(HISTOGRAM_GAMMA)


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    @staticmethod
    def bucket(latency_ms: float) -> int:
        return math.ceil(math.log(max(latency_ms, HISTOGRAM_MIN_MS)) / _LOG_GAMMA)

    def add(self, latency_ms: float, count: int = 1) -> None:
        key = self.bucket(latency_ms)
        self.counts[key] = self.counts.get(key, 0) + count
        self.total += count

    def merge(self, other: LatencyHistogram) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """The latency (ms) at quantile ``q`` in [0, 1], or ``None`` with no data."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen >= rank:
                # Geometric midpoint of (gamma**(key-1), gamma**key].
                return float(HISTOGRAM_GAMMA ** (key - 0.5))
        raise AssertionError("unreachable: rank exceeds total")


@dataclass
class _Second:
    second: int
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True)
class SeriesView:
    requests: int
    errors: int
    injected: int
    """Of the errors, those an injected fault caused (told apart from real failures)."""
    retries: int
    rps: float
    success_rate: float | None
    p50_ms: float | None
    p99_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "injected": self.injected,
            "retries": self.retries,
            "rps": round(self.rps, 3),
            "success_rate": None if self.success_rate is None else round(self.success_rate, 5),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 3),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
        }


class Series:
    """Counts since start plus per-second buckets for the last ``WINDOW_S`` seconds."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.injected = 0
        self.retries = 0
        self._seconds: dict[int, _Second] = {}
        self._newest = 0

    def add(
        self, ts: float, latency_ms: float, error: bool, injected: bool = False, retries: int = 0
    ) -> None:
        self.requests += 1
        self.errors += error
        self.injected += error and injected
        self.retries += retries
        second = int(ts)
        if second > self._newest:
            self._newest = second
            oldest = second - WINDOW_S
            for stale in [s for s in self._seconds if s <= oldest]:
                del self._seconds[stale]
        elif second <= self._newest - WINDOW_S:
            return  # older than the window: counted in the totals only
        bucket = self._seconds.get(second) or self._seconds.setdefault(second, _Second(second))
        bucket.requests += 1
        bucket.errors += error
        bucket.latency.add(latency_ms)

    def view(self, now: float) -> SeriesView:
        """Totals, plus rates over the ``WINDOW_S`` seconds up to and including ``now``'s."""
        start = int(now) - WINDOW_S + 1
        in_window = [b for b in self._seconds.values() if start <= b.second <= int(now)]
        requests = sum(b.requests for b in in_window)
        errors = sum(b.errors for b in in_window)
        latency = LatencyHistogram()
        for bucket in in_window:
            latency.merge(bucket.latency)
        return SeriesView(
            requests=self.requests,
            errors=self.errors,
            injected=self.injected,
            retries=self.retries,
            rps=requests / WINDOW_S,
            success_rate=None if requests == 0 else 1.0 - errors / requests,
            p50_ms=latency.quantile(0.50),
            p99_ms=latency.quantile(0.99),
        )


def is_error(status: int, error: str | None) -> bool:
    """A failure as users count them: a 5xx, or a response the upstream cut short.

    A caller that hangs up (``downstream-reset``) is not the service's failure.
    """
    return status >= 500 or (error is not None and error != "downstream-reset")


class Metrics:
    """Every series the control plane keeps, fed by sidecar records."""

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], Series] = {}
        """Outbound records, by (source, destination): each request counted once, client side."""
        self.instances: dict[str, Series] = {}
        """Inbound records, by instance: what each instance itself served."""
        self.dropped = 0
        self.malformed = 0

    def ingest(self, records: Iterable[object], dropped: int = 0) -> None:
        self.dropped += dropped
        for raw in records:
            record = _valid(raw)
            if record is None:
                self.malformed += 1
                continue
            error = is_error(record["status"], record["error"])
            if record["direction"] == "outbound":
                key = (record["source"], record["destination"])
                series = self.edges.get(key) or self.edges.setdefault(key, Series())
            else:
                instance = record["instance"]
                series = self.instances.get(instance) or self.instances.setdefault(
                    instance, Series()
                )
            retries = record.get("retries")
            series.add(
                record["ts"],
                record["latency_ms"],
                error,
                injected=bool(record.get("fault")),
                retries=retries if isinstance(retries, int) else 0,
            )


def _valid(raw: object) -> Mapping[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    ok = (
        raw.get("direction") in ("outbound", "inbound")
        and isinstance(raw.get("source"), str)
        and isinstance(raw.get("destination"), str)
        and isinstance(raw.get("instance"), str)
        and isinstance(raw.get("status"), int)
        and isinstance(raw.get("ts"), int | float)
        and isinstance(raw.get("latency_ms"), int | float)
        and (raw.get("error") is None or isinstance(raw.get("error"), str))
    )
    return raw if ok else None
