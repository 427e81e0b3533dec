"""Aggregating sidecar records into the numbers users read: rps, success rate, p50/p90/p99.

Each series (an edge, a service, a version of a service, an instance) keeps
counts since start plus a ring of per-second buckets covering the last
``HISTORY_S`` seconds; each bucket holds its counts and a sparse log-bucketed
latency histogram, never a list of requests. So memory is bounded by the
number of series, whatever the traffic, and a series nobody has called for
``FORGET_AFTER_S`` is forgotten.

Windows are made of whole seconds: the 10 s window at 12:00:07.4 covers
12:00:00.0 to 12:00:07.0, the ten seconds before the current one, whose
records are still arriving (sidecars send theirs every 100 ms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from devmesh import payloads

WINDOWS = (1, 10, 60)
"""The windows every series can be read over, in seconds."""
DEFAULT_WINDOW = 10
HISTORY_S = 60
"""Per-second buckets kept per series: the longest window."""
FORGET_AFTER_S = 900.0
"""A series with no request for this long is dropped (an outside host called once)."""

HISTOGRAM_GAMMA = 1.02
"""Bucket ``i`` holds latencies in ``(gamma**(i-1), gamma**i]`` ms. Reporting a
bucket's geometric midpoint bounds the relative error of any percentile by
``(gamma - 1) / 2`` = 1 % (for latencies above ``HISTOGRAM_MIN_MS``)."""
HISTOGRAM_MIN_MS = 0.01
_LOG_GAMMA = math.log(HISTOGRAM_GAMMA)

DISPLAY_BINS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
"""Upper bounds of the latency histogram shown per window (the TUI's), plus one bin above."""

STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
"""How answers are counted: ``none`` is a request that got no status (the caller left)."""

PROMETHEUS_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of the cumulative latency histogram served on ``/metrics`` (seconds)."""


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

    def bins(self, bounds: tuple[float, ...] = DISPLAY_BINS_MS) -> list[int]:
        """Counts per bin of ``bounds`` (ms, upper bounds), plus one for what is above."""
        found = [0] * (len(bounds) + 1)
        for key, count in self.counts.items():
            value = HISTOGRAM_GAMMA ** (key - 0.5)
            index = next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))
            found[index] += count
        return found

    def merge(self, other: LatencyHistogram) -> None:
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """The latency (ms) at quantile ``q`` in [0, 1], or ``None`` with no data."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """The latencies (ms) at each quantile of ``qs`` (ascending), in one pass."""
        if self.total == 0:
            return [None] * len(qs)
        ranks = [max(1, math.ceil(q * self.total)) for q in qs]
        found: list[float | None] = []
        seen = 0
        keys = iter(sorted(self.counts))
        key = 0
        for rank in ranks:
            while seen < rank:
                key = next(keys)
                seen += self.counts[key]
            # Geometric midpoint of (gamma**(key-1), gamma**key].
            found.append(float(HISTOGRAM_GAMMA ** (key - 0.5)))
        return found


class Counts:
    """What happened to a set of requests."""

    __slots__ = ("classes", "errors", "injected", "requests", "retries", "timeouts")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.injected = 0
        """Of the errors, those an injected fault caused (told apart from real failures)."""
        self.retries = 0
        self.timeouts = 0
        self.classes = [0] * len(STATUS_CLASSES)

    def add(self, status: int, error: bool, injected: bool, retries: int, timeout: bool) -> None:
        self.requests += 1
        self.errors += error
        self.injected += error and injected
        self.retries += retries
        self.timeouts += timeout
        self.classes[status // 100 if 100 <= status < 600 else 0] += 1

    def merge(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.injected += other.injected
        self.retries += other.retries
        self.timeouts += other.timeouts
        for index, count in enumerate(other.classes):
            self.classes[index] += count

    def to_json(self) -> payloads.Counts:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "injected": self.injected,
            "retries": self.retries,
            "timeouts": self.timeouts,
            "classes": cast(
                payloads.StatusClasses, dict(zip(STATUS_CLASSES, self.classes, strict=True))
            ),
        }


class _Second:
    __slots__ = ("counts", "latency", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.counts = Counts()
        self.latency = LatencyHistogram()


@dataclass(frozen=True)
class SeriesView:
    """A series read at one time: totals since start, and rates over a window."""

    total: Counts
    window: Counts
    window_s: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    bins: list[int]
    """The window's latencies per bin of ``DISPLAY_BINS_MS`` (and above)."""

    @property
    def requests(self) -> int:
        return self.total.requests

    @property
    def errors(self) -> int:
        return self.total.errors

    @property
    def rps(self) -> float:
        return self.window.requests / self.window_s

    @property
    def success_rate(self) -> float | None:
        """Of the window's requests, the share that did not fail (``None``: none came)."""
        if self.window.requests == 0:
            return None
        return 1.0 - self.window.errors / self.window.requests

    def to_json(self) -> payloads.Traffic:
        """The totals at the top level (``requests``, ``errors``, ...), the window's rates
        and percentiles beside them, and the window's own counts under ``window``."""
        total = self.total.to_json()
        return {
            "requests": total["requests"],
            "errors": total["errors"],
            "injected": total["injected"],
            "retries": total["retries"],
            "timeouts": total["timeouts"],
            "classes": total["classes"],
            "window_s": self.window_s,
            "rps": round(self.rps, 3),
            "success_rate": _round(self.success_rate, 5),
            "p50_ms": _round(self.p50_ms, 3),
            "p90_ms": _round(self.p90_ms, 3),
            "p99_ms": _round(self.p99_ms, 3),
            "window": self.window.to_json(),
            "latency_bins": [
                (bound, count)
                for bound, count in zip([*DISPLAY_BINS_MS, None], self.bins, strict=True)
            ],
        }


class Series:
    """Counts since start, a cumulative latency histogram for Prometheus, and per-second
    buckets for the last ``HISTORY_S`` seconds."""

    def __init__(self) -> None:
        self.total = Counts()
        self.latency_buckets = [0] * (len(PROMETHEUS_BUCKETS_S) + 1)
        """Requests per Prometheus bucket (not cumulative; the last is +Inf)."""
        self.latency_sum_ms = 0.0
        self.last_ts = 0.0
        self._ring: list[_Second | None] = [None] * HISTORY_S

    @property
    def requests(self) -> int:
        return self.total.requests

    @property
    def errors(self) -> int:
        return self.total.errors

    def add(
        self,
        ts: float,
        latency_ms: float,
        status: int,
        error: bool,
        *,
        injected: bool = False,
        retries: int = 0,
        timeout: bool = False,
    ) -> None:
        self.total.add(status, error, injected, retries, timeout)
        self.latency_sum_ms += latency_ms
        self.latency_buckets[_prometheus_bucket(latency_ms / 1000.0)] += 1
        second = int(ts)
        if ts > self.last_ts:
            self.last_ts = ts
        if second <= int(self.last_ts) - HISTORY_S:
            return  # older than the history: counted in the totals only
        slot = second % HISTORY_S
        bucket = self._ring[slot]
        if bucket is None or bucket.second != second:
            if bucket is not None and bucket.second > second:
                return  # its slot already holds a newer second
            bucket = self._ring[slot] = _Second(second)
        bucket.counts.add(status, error, injected, retries, timeout)
        bucket.latency.add(latency_ms)

    def _seconds(self, first: int, last: int) -> Iterator[_Second]:
        """The buckets of whole seconds ``first`` to ``last`` (inclusive) that saw requests."""
        for second in range(max(first, last - HISTORY_S + 1), last + 1):
            bucket = self._ring[second % HISTORY_S]
            if bucket is not None and bucket.second == second:
                yield bucket

    def view(self, now: float, window: int = DEFAULT_WINDOW) -> SeriesView:
        """Totals, and the rates of the ``window`` whole seconds before ``now``'s."""
        if not 1 <= window <= HISTORY_S:
            raise ValueError(f"a window is 1 to {HISTORY_S} seconds, not {window}")
        current = int(now)
        counts, latency = Counts(), LatencyHistogram()
        for bucket in self._seconds(current - window, current - 1):
            counts.merge(bucket.counts)
            latency.merge(bucket.latency)
        p50, p90, p99 = latency.quantiles((0.5, 0.9, 0.99))
        return SeriesView(self.total, counts, window, p50, p90, p99, latency.bins())

    def history(self, now: float, seconds: int = HISTORY_S) -> payloads.History:
        """Requests and errors per whole second, oldest first, for the ``seconds`` before
        ``now``'s (for a sparkline)."""
        current = int(now)
        requests = [0] * seconds
        errors = [0] * seconds
        first = current - seconds
        for bucket in self._seconds(first, current - 1):
            requests[bucket.second - first] = bucket.counts.requests
            errors[bucket.second - first] = bucket.counts.errors
        return {"requests": requests, "errors": errors}


def _prometheus_bucket(latency_s: float) -> int:
    for index, bound in enumerate(PROMETHEUS_BUCKETS_S):
        if latency_s <= bound:
            return index
    return len(PROMETHEUS_BUCKETS_S)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


_NOT_ERRORS = ("downstream-reset", "body-timeout", "denied")
"""A caller that went away, or whose body did not arrive in time, is not the service's
failure; nor is a 403 of a policy."""
MAX_SECURITY_EDGES = 10_000
"""Edges whose mTLS and authorization are counted; a plaintext caller's source is what it
says, so the edges it can make up are bounded."""


class EdgeSecurity:
    """How one edge's requests travelled (mTLS or not) and what authorization made of them."""

    __slots__ = ("audited", "by_rule", "denied", "last_mtls", "mtls", "plaintext")

    def __init__(self) -> None:
        self.mtls = 0
        self.plaintext = 0
        """Outbound requests that reached an endpoint, by how they went."""
        self.last_mtls: bool | None = None
        self.denied = 0
        self.audited = 0
        """Requests an audit-mode rule would have denied (let through)."""
        self.by_rule: dict[str, int] = {}
        """Denials and audit reports by rule name (``deny:x``, ``audit:x``)."""

    def to_json(self) -> payloads.SecurityCounts:
        return {
            "mtls_requests": self.mtls,
            "plaintext_requests": self.plaintext,
            "last": None if self.last_mtls is None else ("mtls" if self.last_mtls else "plaintext"),
            "denied": self.denied,
            "audited": self.audited,
            "by_rule": dict(self.by_rule),
        }


def is_error(status: int, error: str | None) -> bool:
    """A failure as users count them: a 5xx, or a response the upstream cut short.

    A caller that hangs up (``downstream-reset``) or does not send its body in time
    (``body-timeout``) is not the service's failure.
    """
    return status >= 500 or (error is not None and error not in _NOT_ERRORS)


class Metrics:
    """Every series the control plane keeps, fed by sidecar records.

    Each request is counted once per map: outbound records (the caller's sidecar,
    each request once, with the endpoint it reached) feed ``edges``, ``services``
    and ``versions``; inbound records (the instance's own sidecar) feed ``instances``.
    """

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], Series] = {}
        """By (source, destination)."""
        self.services: dict[str, Series] = {}
        """By destination service, whoever called it."""
        self.versions: dict[tuple[str, str], Series] = {}
        """By (destination, version)."""
        self.instances: dict[str, Series] = {}
        """What each instance itself served."""
        self.security: dict[tuple[str, str], EdgeSecurity] = {}
        """By (source, destination): mTLS from outbound records, authorization from inbound
        ones (the destination's sidecar judges, with the source its certificate proves)."""
        self.records = 0
        self.dropped = 0
        """Records sidecars dropped before sending them (their buffer was full)."""
        self.malformed = 0

    def ingest(self, records: Iterable[object], dropped: int = 0) -> list[Mapping[str, Any]]:
        """Count ``records``; returns the valid ones (for the tap and the traces)."""
        self.dropped += dropped
        valid = []
        for raw in records:
            record = _valid(raw)
            if record is None:
                self.malformed += 1
                continue
            valid.append(record)
            error = is_error(record["status"], record["error"])
            retries = record.get("retries")
            for series in self._series_of(record):
                series.add(
                    record["ts"],
                    record["latency_ms"],
                    record["status"],
                    error,
                    injected=bool(record.get("fault")),
                    retries=retries if isinstance(retries, int) else 0,
                    timeout=record["error"] == "timeout",
                )
            self._secure(record)
        self.records += len(valid)
        return valid

    def _series_of(self, record: Mapping[str, Any]) -> list[Series]:
        if record["direction"] == "inbound":
            return [_series(self.instances, record["instance"])]
        destination, version = record["destination"], record["version"]
        found = [
            _series(self.edges, (record["source"], destination)),
            _series(self.services, destination),
        ]
        if version:  # none: the request reached no endpoint
            found.append(_series(self.versions, (destination, version)))
        return found

    def _secure(self, record: Mapping[str, Any]) -> None:
        authz = record.get("authz")
        outbound = record["direction"] == "outbound"
        if outbound and not record["version"]:
            return  # it reached no endpoint: it went neither way
        if not outbound and not isinstance(authz, str):
            return
        key = (record["source"], record["destination"])
        edge = self.security.get(key)
        if edge is None:
            if len(self.security) >= MAX_SECURITY_EDGES:
                return  # a plaintext caller names its own source: do not let it grow this
            edge = self.security[key] = EdgeSecurity()
        if outbound:
            secure = record.get("mtls") is True
            edge.last_mtls = secure
            if secure:
                edge.mtls += 1
            else:
                edge.plaintext += 1
        elif isinstance(authz, str):
            if authz.startswith("deny:"):
                edge.denied += 1
            else:
                edge.audited += 1
            edge.by_rule[authz] = edge.by_rule.get(authz, 0) + 1

    def forget_idle(self, now: float) -> int:
        """Drop the series nobody called for ``FORGET_AFTER_S``; returns how many."""
        forgotten = 0
        tables: tuple[dict[Any, Series], ...] = (
            self.edges,
            self.services,
            self.versions,
            self.instances,
        )
        for table in tables:
            for key in [k for k, s in table.items() if now - s.last_ts > FORGET_AFTER_S]:
                del table[key]
                forgotten += 1
        return forgotten


def _series(table: dict[Any, Series], key: Any) -> Series:
    series = table.get(key)
    if series is None:
        series = table[key] = Series()
    return series


def _valid(raw: object) -> Mapping[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    ok = (
        raw.get("direction") in ("outbound", "inbound")
        and isinstance(raw.get("source"), str)
        and isinstance(raw.get("destination"), str)
        and isinstance(raw.get("instance"), str)
        and isinstance(raw.get("version", ""), str)
        and isinstance(raw.get("status"), int)
        and isinstance(raw.get("ts"), int | float)
        and isinstance(raw.get("latency_ms"), int | float)
        and (raw.get("error") is None or isinstance(raw.get("error"), str))
    )
    if ok:
        raw.setdefault("version", "")
        raw.setdefault("error", None)
    return raw if ok else None
