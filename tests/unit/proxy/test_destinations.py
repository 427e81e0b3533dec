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


def ejecting_at_once(
    panic_threshold: float = 50.0, max_ejection_percent: float = 100.0
) -> RoutePolicy:
    """One 500 ejects, and as many endpoints may be ejected as fail."""
    outlier = OutlierSettings(
        consecutive_5xx=1,
        max_ejection_percent=max_ejection_percent,
        panic_threshold=panic_threshold,
    )
    return RoutePolicy(outlier=outlier)


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
    policy = ejecting_at_once(panic_threshold=0)  # without panic: all ejected, none taken
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


# the panic threshold: too few healthy, route to all


def test_the_only_endpoint_ejected_by_5xx_is_still_routed_to() -> None:
    only = (ep("c-1"),)
    where = destination(Route(endpoints=only, policy=RoutePolicy()))
    for _ in range(5):
        where.detector.record("c-1", Outcome.status(500))
    assert where.detector.is_ejected("c-1")
    assert picks(where, 3, only) == ["c-1"] * 3
    summary = where.summary()
    assert (summary.state, summary.panic) == ("open", True)
    assert summary.to_json(0.0)["panic"] is True


def test_with_panic_0_the_only_endpoint_ejected_takes_nothing() -> None:
    only = (ep("c-1"),)
    where = destination(Route(endpoints=only, policy=ejecting_at_once(panic_threshold=0)))
    where.detector.record("c-1", Outcome.status(500))
    blocked = where.pick(only, None)
    assert isinstance(blocked, Unavailable)
    assert blocked.why == "all-ejected"
    assert (where.summary().state, where.summary().panic) == ("open", False)


def test_at_50_half_healthy_is_no_panic_fewer_is() -> None:
    four = (*THREE, ep("a-4", port=4))
    where = destination(Route(endpoints=four, policy=ejecting_at_once()))
    where.detector.record("a-1", Outcome.status(500))
    where.detector.record("a-2", Outcome.status(500))
    assert picks(where, 4, four) == ["a-3", "a-4"] * 2
    assert not where.summary().panic
    where.detector.record("a-3", Outcome.status(500))
    assert sorted(picks(where, 4, four)) == ["a-1", "a-2", "a-3", "a-4"], "one in four: all"
    assert where.summary().panic


def test_at_100_one_ejection_routes_to_all() -> None:
    where = destination(Route(endpoints=THREE, policy=ejecting_at_once(panic_threshold=100)))
    where.detector.record("a-2", Outcome.status(500))
    assert picks(where, 3) == ["a-1", "a-2", "a-3"]
    assert where.summary().panic


def test_the_pool_is_the_version_the_split_chose() -> None:
    # catalog has four endpoints, three healthy (75 %); its v1 has one, ejected (0 %).
    mixed = (ep("v1-1", "v1", 1), ep("v2-1", "v2", 2), ep("v2-2", "v2", 3), ep("v2-3", "v2", 4))
    v1 = mixed[:1]
    split = {"v1": 50.0, "v2": 50.0}
    where = destination(Route(endpoints=mixed, split=split, versions=("v1", "v2")))
    for _ in range(5):
        where.detector.record("v1-1", Outcome.status(503))
    assert where.detector.is_ejected("v1-1")
    assert picks(where, 2, v1, "v1") == ["v1-1"] * 2, "v1's own pool is in panic"
    assert "v1-1" not in picks(where, 6, mixed), "the whole service is not"
    assert where.summary().panic


def test_without_a_split_the_pool_is_the_whole_service() -> None:
    mixed = (ep("v1-1", "v1", 1), ep("v2-1", "v2", 2), ep("v2-2", "v2", 3), ep("v2-3", "v2", 4))
    where = destination(Route(endpoints=mixed, versions=("v1", "v2")))
    for _ in range(5):
        where.detector.record("v1-1", Outcome.status(503))
    assert "v1-1" not in picks(where, 6, mixed)
    assert not where.summary().panic


def test_in_panic_ejections_follow_the_max_ejection_percent_as_before() -> None:
    clock = Clock()
    policy = ejecting_at_once(panic_threshold=100, max_ejection_percent=50.0)
    where = destination(Route(endpoints=THREE, policy=policy), clock)
    where.detector.record("a-1", Outcome.status(500))
    assert where.summary().panic
    where.detector.record("a-2", Outcome.status(500))  # two of three out: over 50 %, refused
    assert not where.detector.is_ejected("a-2")
    assert where.summary().ejected == 1
    for _ in range(5):  # taking traffic in panic, an open endpoint's results change nothing
        where.detector.record("a-1", Outcome.status(500))
    found = where.detector.endpoint("a-1")
    assert found is not None
    assert (found.ejections, found.retry_at) == (1, clock.now + 30.0)
    clock.now += 30.0
    assert (where.summary().state, where.summary().panic) == ("half-open", False)
    where.detector.record("a-1", Outcome.status(200))
    assert where.summary().state == "closed"


def test_in_panic_a_retry_still_prefers_an_endpoint_not_tried() -> None:
    two = THREE[:2]
    where = destination(Route(endpoints=two, policy=ejecting_at_once()))
    where.detector.record("a-1", Outcome.status(500))
    where.detector.record("a-2", Outcome.status(500))
    for tried in ("a-1", "a-2"):
        other = where.pick(two, None, avoid=[tried])
        assert isinstance(other, Endpoint)
        assert other.instance != tried


def test_the_breaker_listener_is_told_of_the_panic() -> None:
    seen: list[tuple[str, bool]] = []
    found = Destinations(lambda service, s: seen.append((s.state, s.panic)), clock=Clock())
    found.sync(Snapshot(1, {"catalog": Route(endpoints=(ep("c-1"),), policy=ejecting_at_once())}))
    catalog = found.get("catalog")
    assert catalog is not None
    catalog.detector.record("c-1", Outcome.status(500))
    assert seen == [("open", True)]
    assert found.breakers()["catalog"].panic
