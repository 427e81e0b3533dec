"""Live streams for the TUI and the CLI: mesh events, and a tap of sampled requests.

Both are fan-outs to subscribers that each own a bounded queue: a subscriber
that reads too slowly loses its oldest messages (counted), never slows the
control plane or another subscriber down, and never grows its memory.

The tap keeps itself bounded under heavy traffic by sampling: each subscriber
gets at most ``rate`` requests per second (a token bucket, so a short burst
passes whole); what it does not get is counted and reported once a second, so
a user always knows how much they are not seeing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from devmesh.forms.tap import is_status
from devmesh.payloads import Event, TapMessage, TapRequest, TapStats

M = TypeVar("M", bound=Mapping[str, object])
"""The messages of a stream."""

QUEUE_LIMIT = 1000
"""Messages waiting for one subscriber; past it the oldest are dropped."""
TAP_RATE = 100.0
"""Requests per second a tap shows by default; the rest are counted, not shown."""
TAP_FIELDS = (
    "ts",
    "source",
    "destination",
    "method",
    "path",
    "status",
    "latency_ms",
    "version",
    "instance",
    "trace_id",
    "fault",
    "error",
    "retries",
)


class Subscriber(Generic[M]):
    """One reader of a stream: its queue of messages, and what it lost."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._queue: asyncio.Queue[M] = asyncio.Queue(limit)
        self.lost = 0
        """Messages dropped because this subscriber read too slowly."""

    def offer(self, message: M) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.lost += 1
        self._queue.put_nowait(message)

    async def next(self) -> M:
        return await self._queue.get()


class Events:
    """Mesh events (per-second status, breaker changes, config changes) to every subscriber."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber[Event]] = set()

    def subscribe(self) -> Subscriber[Event]:
        subscriber: Subscriber[Event] = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber[Event]) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, message: Event) -> None:
        for subscriber in self.subscribers:
            subscriber.offer(message)


class TapFilterError(ValueError):
    """A tap filter the user wrote wrongly; the message says which and how."""


@dataclass(frozen=True)
class TapFilter:
    service: str | None = None
    """Requests from or to this service."""
    path: str | None = None
    """Requests whose path starts with this."""
    status: str | None = None
    """An exact status (``503``) or a class (``5xx``)."""
    min_latency_ms: float | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TapFilter:
        """From a stream's query (``service``, ``path``, ``status``, ``min_latency_ms``)."""
        status = query.get("status") or None
        if status is not None and not is_status(status):
            raise TapFilterError(
                f"status {status!r} is not a status (503) or a class (5xx, 4xx, ...)"
            )
        latency = query.get("min_latency_ms") or None
        try:
            min_latency = None if latency is None else float(latency)
        except ValueError:
            min_latency = math.nan
        if min_latency is not None and not math.isfinite(min_latency):
            raise TapFilterError(f"min_latency_ms {latency!r} is not a number")
        if min_latency is not None and min_latency < 0:
            raise TapFilterError("min_latency_ms must be 0 or more")
        return cls(
            service=query.get("service") or None,
            path=query.get("path") or None,
            status=status.lower() if status else None,
            min_latency_ms=min_latency,
        )

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.service is not None and self.service not in (
            record["source"],
            record["destination"],
        ):
            return False
        if self.path is not None and not str(record.get("path", "")).startswith(self.path):
            return False
        if self.status is not None:
            status = str(record["status"])
            if self.status.endswith("xx"):
                if status[:1] != self.status[:1] or len(status) != 3:
                    return False
            elif status != self.status:
                return False
        return self.min_latency_ms is None or record["latency_ms"] >= self.min_latency_ms


class TapSubscriber(Subscriber[TapMessage]):
    """A tap reader: its filter, and a token bucket of ``rate`` requests per second."""

    def __init__(
        self, where: TapFilter, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.where = where
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._filled_at = clock()
        self.matched = 0
        self.sampled_out = 0
        """Matching requests not shown because the rate was reached."""

    def consider(self, record: Mapping[str, Any]) -> None:
        if not self.where.matches(record):
            return
        self.matched += 1
        now = self._clock()
        # The bucket holds at least one token's room, so a rate under 1 a second still shows
        # one request every 1/rate seconds.
        room = max(self.rate, 1.0)
        self._tokens = min(room, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        if self._tokens < 1.0:
            self.sampled_out += 1
            return
        self._tokens -= 1.0
        shown = {"type": "request", **{k: record.get(k) for k in TAP_FIELDS}}
        self.offer(cast(TapRequest, shown))  # the tap's fields, as the sidecar's record has them

    def report(self) -> TapStats:
        """What this reader matched and did not see so far."""
        return {
            "type": "stats",
            "matched": self.matched,
            "sampled_out": self.sampled_out,
            "lost": self.lost,
            "rate": self.rate,
        }


class Tap:
    """Outbound records (each request once, as its caller saw it) to tap subscribers."""

    def __init__(self) -> None:
        self.subscribers: set[TapSubscriber] = set()

    def subscribe(self, where: TapFilter, rate: float = TAP_RATE) -> TapSubscriber:
        subscriber = TapSubscriber(where, rate)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: TapSubscriber) -> None:
        self.subscribers.discard(subscriber)

    def feed(self, records: Iterable[Mapping[str, Any]]) -> None:
        if not self.subscribers:
            return
        for record in records:
            if record["direction"] != "outbound":
                continue
            for subscriber in self.subscribers:
                subscriber.consider(record)


async def ticks(period: float = 1.0, offset: float = 0.25) -> AsyncIterator[float]:
    """Yield the wall-clock time shortly after each whole ``period`` (``offset`` into it,
    when the sidecars have sent the second that just ended), without drifting."""
    while True:
        now = time.time()
        due = (now - offset) // period * period + period + offset
        await asyncio.sleep(due - now)
        yield time.time()
