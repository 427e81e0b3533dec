"""devmesh.controlplane.streams: the tap's filters and sampling, and bounded subscribers."""

from __future__ import annotations

from typing import Any

import pytest

from devmesh.controlplane.streams import Subscriber, TapFilter, TapFilterError, TapSubscriber


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "direction": "outbound",
        "source": "frontend",
        "destination": "catalog",
        "path": "/items/7",
        "status": 200,
        "latency_ms": 12.0,
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("query", "changes", "matches"),
    [
        ({}, {}, True),
        ({"service": "catalog"}, {}, True),
        ({"service": "frontend"}, {}, True),
        ({"service": "pricing"}, {}, False),
        ({"path": "/items"}, {}, True),
        ({"path": "/users"}, {}, False),
        ({"status": "2xx"}, {}, True),
        ({"status": "5xx"}, {}, False),
        ({"status": "5XX"}, {"status": 503}, True),
        ({"status": "503"}, {"status": 503}, True),
        ({"status": "503"}, {"status": 500}, False),
        ({"status": "5xx"}, {"status": 0}, False),
        ({"min_latency_ms": "100"}, {}, False),
        ({"min_latency_ms": "12"}, {}, True),
    ],
)
def test_filters(query: dict[str, str], changes: dict[str, Any], matches: bool) -> None:
    assert TapFilter.from_query(query).matches(record(**changes)) is matches


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"status": "5zz"}, "not a status"),
        ({"status": "600"}, "not a status"),
        ({"min_latency_ms": "slow"}, "not a number"),
        ({"min_latency_ms": "nan"}, "not a number"),
        ({"min_latency_ms": "inf"}, "not a number"),
        ({"min_latency_ms": "1e400"}, "not a number"),
        ({"min_latency_ms": "-1"}, "0 or more"),
    ],
)
def test_bad_filters_are_refused_with_a_sentence(query: dict[str, str], says: str) -> None:
    with pytest.raises(TapFilterError, match=says):
        TapFilter.from_query(query)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def shown(subscriber: TapSubscriber) -> int:
    return subscriber._queue.qsize()  # what waits for the reader


def test_the_tap_lets_a_burst_of_rate_through_then_rate_a_second() -> None:
    clock = Clock()
    tap = TapSubscriber(TapFilter(), rate=5, clock=clock)
    for _ in range(20):
        tap.consider(record())
    assert (shown(tap), tap.sampled_out, tap.matched) == (5, 15, 20)
    clock.now += 1.0
    for _ in range(20):
        tap.consider(record())
    assert (shown(tap), tap.sampled_out) == (10, 30)


def test_a_rate_under_one_still_shows_one_request_every_so_often() -> None:
    clock = Clock()
    tap = TapSubscriber(TapFilter(), rate=0.5, clock=clock)
    tap.consider(record())
    assert shown(tap) == 0, "the bucket starts half full"
    clock.now += 1.0
    tap.consider(record())
    assert shown(tap) == 1, "one token after two seconds of 0.5 a second"
    tap.consider(record())
    assert shown(tap) == 1


def test_unmatched_requests_are_neither_shown_nor_counted() -> None:
    tap = TapSubscriber(TapFilter(service="pricing"), rate=100, clock=Clock())
    tap.consider(record())
    assert (shown(tap), tap.matched, tap.sampled_out) == (0, 0, 0)


def test_a_slow_reader_loses_its_oldest_messages_and_they_are_counted() -> None:
    subscriber = Subscriber(limit=3)
    for index in range(5):
        subscriber.offer({"index": index})
    assert subscriber.lost == 2
    assert [subscriber._queue.get_nowait()["index"] for _ in range(3)] == [2, 3, 4]
