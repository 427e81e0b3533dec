"""proxy.destinations: which endpoint of the chosen version takes a call (balancer, breaker,
retries avoiding the endpoints already tried), and what survives a new snapshot."""

from __future__ import annotations

from collections import Counter

from proxy.balancer import Unavailable
from proxy.destinations import Destination, Destinations
from proxy.outlier import Outcome, OutlierSettings
from proxy.policy import RoutePolicy
from proxy.snapshot import Endpoint, Route, Snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ep(instance: str, version: str = "v1", port: int = 1000) -> Endpoint:
    return Endpoint(instance=instance, version=version, address=f"127.0.0.1:{port}")


THREE = (ep("a-1", port=1), ep("a-2", port=2), ep("a-3", port=3))


def destinations(clock: Clock | None = None, **routes: Route) -> Destinations:
    found = Destinations(clock=clock or Clock())
    found.sync(Snapshot(1, routes))
    return found


def destination(route: Route, clock: Clock | None = None) -> Destination:
    found = destinations(clock, catalog=route).get("catalog")
    assert found is not None
    return found


def picks(
    where: Destination, n: int, candidates: tuple[Endpoint, ...] = THREE, version: str | None = None
) -> list[str]:
    out = []
    for _ in range(n):
        chosen = where.pick(candidates, version)
        assert isinstance(chosen, Endpoint), chosen
        out.append(chosen.instance)
    return out


def answered_with_failover(where: Destination, dead: str, n: int) -> list[str]:
    """Who answers ``n`` calls when ``dead`` takes none: a pick, then a retry avoiding it."""
    out = []
    for _ in range(n):
        chosen = where.pick(THREE, None)
        assert isinstance(chosen, Endpoint), chosen
        if chosen.instance == dead:
            chosen = where.pick(THREE, None, avoid=[dead])
            assert isinstance(chosen, Endpoint), chosen
        out.append(chosen.instance)
    return out


def test_round_robin_cycles_evenly_over_the_endpoints_in_order() -> None:
    assert picks(destination(Route(endpoints=THREE)), 9) == ["a-1", "a-2", "a-3"] * 3


def test_round_robin_is_kept_per_service_and_per_version() -> None:
    one = (ep("one-1"), ep("one-2"))
    two = (ep("two-1"), ep("two-2"))
    found = destinations(one=Route(endpoints=one), two=Route(endpoints=two))
    first, second = found.get("one"), found.get("two")
    assert first is not None
    assert second is not None
    assert picks(first, 1, one) == ["one-1"]
    assert picks(second, 1, two) == ["two-1"]
    assert picks(first, 1, one) == ["one-2"]
    v2 = (ep("c-v2-1", "v2"), ep("c-v2-2", "v2"))
    assert picks(first, 1, v2, "v2") == ["c-v2-1"], "another version keeps its own turn"


def test_a_retry_never_gets_an_endpoint_it_tried_while_another_is_left() -> None:
    where = destination(Route(endpoints=THREE))
    for tried in THREE:
        for _ in range(6):
            other = where.pick(THREE, None, avoid=[tried.instance])
            assert isinstance(other, Endpoint), other
            assert other.instance != tried.instance


def test_the_endpoints_left_share_the_load_of_one_that_takes_none() -> None:
    answered = answered_with_failover(destination(Route(endpoints=THREE)), "a-1", 12)
    assert Counter(answered) == Counter({"a-2": 6, "a-3": 6})


def test_second_tries_leave_the_round_robin_of_first_tries_as_it_was() -> None:
    # An endpoint that takes nothing is tried first only as often as without second tries.
    two = THREE[:2]
    where = destination(Route(endpoints=two))
    firsts = []
    for _ in range(6):
        first = where.pick(two, None)
        assert isinstance(first, Endpoint)
        firsts.append(first.instance)
        if first.instance == "a-1":
            where.pick(two, None, avoid=["a-1"])
    assert firsts == ["a-1", "a-2"] * 3


def test_the_only_endpoint_is_tried_again() -> None:
    only = (ep("c-1"),)
    where = destination(Route(endpoints=only))
    again = where.pick(only, None, avoid=["c-1"])
    assert isinstance(again, Endpoint)
    assert again.instance == "c-1"


def test_a_tried_endpoint_is_known_by_its_instance_wherever_it_moved() -> None:
    moved = (ep("c-1", port=9), ep("c-2", port=2))
    where = destination(Route(endpoints=moved))
    for _ in range(4):
        other = where.pick(moved, None, avoid=["c-1"])
        assert isinstance(other, Endpoint)
        assert other.instance == "c-2"


def test_ejected_endpoints_are_skipped_and_all_ejected_says_when_to_retry() -> None:
    clock = Clock()
    policy = RoutePolicy(outlier=OutlierSettings(consecutive_5xx=1, max_ejection_percent=100.0))
    where = destination(Route(endpoints=THREE[:2], policy=policy), clock)
    where.detector.record("a-1", Outcome.status(500))
    assert picks(where, 4, THREE[:2]) == ["a-2"] * 4
    where.detector.record("a-2", Outcome.status(500))
    blocked = where.pick(THREE[:2], None)
    assert isinstance(blocked, Unavailable)
    assert blocked.why == "all-ejected"
    assert blocked.retry_at == clock.now + 30.0


def test_an_ejected_endpoint_is_not_retried_even_when_the_others_were_tried() -> None:
    policy = RoutePolicy(outlier=OutlierSettings(consecutive_5xx=1, max_ejection_percent=100.0))
    where = destination(Route(endpoints=THREE[:2], policy=policy))
    where.detector.record("a-1", Outcome.status(500))
    again = where.pick(THREE[:2], None, avoid=["a-2"])
    assert isinstance(again, Endpoint)
    assert again.instance == "a-2", "the tried one, not the ejected one"


def test_a_new_snapshot_keeps_what_the_breaker_learnt_and_forgets_gone_services() -> None:
    policy = RoutePolicy(outlier=OutlierSettings(consecutive_5xx=1, max_ejection_percent=100.0))
    found = destinations(catalog=Route(endpoints=THREE, policy=policy))
    catalog = found.get("catalog")
    assert catalog is not None
    catalog.detector.record("a-1", Outcome.status(503))
    found.sync(Snapshot(2, {"catalog": Route(endpoints=THREE[:2], policy=policy)}))
    assert found.get("catalog") is catalog
    assert catalog.detector.is_ejected("a-1")
    found.sync(Snapshot(3, {"pricing": Route(endpoints=(ep("p-1"),))}))
    assert found.get("catalog") is None
    assert set(found.breakers()) == {"pricing"}
