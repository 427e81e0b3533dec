"""One record per request through a sidecar, buffered until the control plane takes them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Literal

Direction = Literal["outbound", "inbound"]


@dataclass(frozen=True, slots=True)
class Record:
    """What one sidecar saw of one request.

    ``outbound`` records are made by the caller's sidecar (the edge
    source -> destination, with the endpoint it chose); ``inbound`` records by
    the destination's sidecar (the instance's own view).
    """

    ts: float
    """Wall-clock time the request finished (seconds since the epoch)."""
    direction: Direction
    source: str
    destination: str
    version: str
    instance: str
    status: int
    """HTTP status sent downstream; 0 if the downstream went away before a status was sent."""
    latency_ms: float
    method: str
    path: str
    error: str | None = None
    """What the mesh saw go wrong (``connect-failure``, ``no-healthy-upstream``, ``reset``)."""
    fault: str | None = None
    """Ids of the injected faults that shaped the answer: an injected failure, not a real one."""
    retries: int = 0
    """Attempts beyond the first."""
    trace_id: str | None = None
    """The W3C trace the request belongs to."""
    span_id: str | None = None
    """This sidecar's span of it: a client span outbound, a server span inbound."""
    parent_id: str | None = None
    """The span this one is a child of (``None``: the request started the trace)."""
    mtls: bool = False
    """The hop was mTLS: outbound, the call to the endpoint; inbound, the caller's."""
    authz: str | None = None
    """``deny:<policy>``: an authorization policy denied it (403); ``audit:<policy>``: an
    audit-mode policy would have, and it was let through."""

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Record))


def _fields(record: Record) -> tuple[Any, ...]:
    return tuple([getattr(record, name) for name in _FIELDS])


CAPACITY = 10_000
"""Records a sidecar keeps while the control plane does not take them (about 3 MB): a
second of 10,000 req/s, or ten of a busy laptop mesh. Older ones are dropped, and counted."""


class TelemetryBuffer:
    """A bounded queue of records; when full, the oldest are dropped and counted.

    Records wait as plain tuples of their fields: the garbage collector stops
    tracking a tuple of strings and numbers after its first pass, so the up to
    ``CAPACITY`` records held while the control plane is away add nothing to the
    collector's later passes (each pauses every request in flight).
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._records: deque[tuple[Any, ...]] = deque(maxlen=capacity)
        self.dropped = 0

    def add(self, record: Record) -> None:
        if len(self._records) == self._records.maxlen:
            self.dropped += 1
        self._records.append(_fields(record))

    def __len__(self) -> int:
        return len(self._records)

    def take(self, limit: int) -> list[Record]:
        """Remove and return up to ``limit`` of the oldest records."""
        count = min(limit, len(self._records))
        return [Record(*self._records.popleft()) for _ in range(count)]

    def put_back(self, records: list[Record]) -> None:
        """Return records that could not be sent to the front of the queue."""
        for returned, record in enumerate(reversed(records)):
            if len(self._records) == self._records.maxlen:
                self.dropped += len(records) - returned  # this one and every older one
                break
            self._records.appendleft(_fields(record))
