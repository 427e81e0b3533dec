"""proxy.telemetry: the bounded record buffer a sidecar keeps until the control plane takes it."""

from __future__ import annotations

from proxy.telemetry import Record, TelemetryBuffer


def rec(n: int) -> Record:
    return Record(
        ts=1000.0 + n,
        direction="outbound",
        source="web",
        destination="catalog",
        version="v1",
        instance="catalog-v1-1",
        status=200,
        latency_ms=1.5,
        method="GET",
        path=f"/items/{n}",
    )


def ids(records: list[Record]) -> list[int]:
    return [int(r.path.rsplit("/", 1)[1]) for r in records]


def filled(capacity: int, count: int) -> TelemetryBuffer:
    buffer = TelemetryBuffer(capacity=capacity)
    for n in range(count):
        buffer.add(rec(n))
    return buffer


def test_take_hands_out_the_oldest_first_and_removes_them() -> None:
    buffer = filled(10, 5)
    assert ids(buffer.take(3)) == [0, 1, 2]
    assert len(buffer) == 2
    assert ids(buffer.take(100)) == [3, 4]
    assert len(buffer) == 0
    assert buffer.take(5) == []


def test_when_full_the_oldest_are_dropped_and_counted() -> None:
    buffer = filled(3, 7)
    assert buffer.dropped == 4
    assert len(buffer) == 3
    assert ids(buffer.take(10)) == [4, 5, 6]


def test_nothing_is_dropped_up_to_capacity() -> None:
    buffer = filled(3, 3)
    assert buffer.dropped == 0
    assert ids(buffer.take(10)) == [0, 1, 2]


def test_put_back_returns_records_to_the_front_in_their_order() -> None:
    buffer = filled(10, 5)
    batch = buffer.take(3)
    buffer.add(rec(5))
    buffer.put_back(batch)
    assert buffer.dropped == 0
    assert ids(buffer.take(10)) == [0, 1, 2, 3, 4, 5]


def test_put_back_into_a_full_buffer_drops_and_counts_what_does_not_fit() -> None:
    buffer = filled(4, 4)
    batch = buffer.take(3)  # [0, 1, 2] out, [3] left
    for n in (10, 11):
        buffer.add(rec(n))  # [3, 10, 11]: one free slot
    buffer.put_back(batch)
    assert len(buffer) == 4
    taken = ids(buffer.take(10))
    assert taken == [2, 3, 10, 11], "the newest of the returned batch fills the free slot"
    assert buffer.dropped == 2, "records 0 and 1 did not fit and must be counted as dropped"


def test_records_go_to_the_wire_as_plain_dicts() -> None:
    wire = rec(1).to_wire()
    assert wire["path"] == "/items/1"
    assert wire["error"] is None
    assert set(wire) == {
        "ts",
        "direction",
        "source",
        "destination",
        "version",
        "instance",
        "status",
        "latency_ms",
        "method",
        "path",
        "error",
        "fault",
        "retries",
        "trace_id",
        "span_id",
        "parent_id",
        "mtls",
        "authz",
    }
