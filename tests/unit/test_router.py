"""proxy.router: which endpoint a request goes to (round robin, weighted version split)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import pytest

from proxy.router import NoEndpoint, Router
from proxy.snapshot import Endpoint, Route, Snapshot


def ep(instance: str, version: str = "v1", port: int = 1000) -> Endpoint:
    return Endpoint(instance=instance, version=version, address=f"127.0.0.1:{port}")


def snapshot(version: int = 1, **routes: Route) -> Snapshot:
    return Snapshot(version=version, routes=routes)


def sequence(values: Iterable[float]) -> Callable[[], float]:
    """A deterministic ``rand`` handing out ``values`` in order (fails if it runs out)."""
    it = iter(values)
    return lambda: next(it)


def picked(router: Router, service: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        result = router.pick(service)
        assert isinstance(result, Endpoint), result
        out.append(result.instance)
    return out


def test_round_robin_cycles_evenly_over_the_endpoints_in_order() -> None:
    route = Route(endpoints=(ep("a-1", port=1), ep("a-2", port=2), ep("a-3", port=3)))
    router = Router(snapshot(catalog=route))
    assert picked(router, "catalog", 9) == ["a-1", "a-2", "a-3"] * 3


def test_round_robin_is_kept_per_service() -> None:
    router = Router(
        snapshot(
            one=Route(endpoints=(ep("one-1"), ep("one-2"))),
            two=Route(endpoints=(ep("two-1"), ep("two-2"))),
        )
    )
    assert picked(router, "one", 1) == ["one-1"]
    assert picked(router, "two", 1) == ["two-1"]
    assert picked(router, "one", 1) == ["one-2"]


def test_unknown_service_is_no_endpoint_naming_it() -> None:
    router = Router(snapshot(catalog=Route(endpoints=(ep("c-1"),))))
    result = router.pick("billing")
    assert isinstance(result, NoEndpoint)
    assert "billing" in result.reason
    assert not router.knows("billing")
    assert router.knows("catalog")


def test_known_service_without_endpoints_is_no_endpoint() -> None:
    router = Router(snapshot(catalog=Route(endpoints=())))
    result = router.pick("catalog")
    assert isinstance(result, NoEndpoint)
    assert "catalog" in result.reason


SPLIT_ROUTE = Route(
    endpoints=(ep("c-v1-1", "v1", 1), ep("c-v2-1", "v2", 2), ep("c-v1-2", "v1", 3)),
    split={"v1": 90.0, "v2": 10.0},
)


def test_split_picks_the_version_whose_weight_band_holds_the_random_point() -> None:
    rand = sequence([0.0, 0.5, 0.8999, 0.9, 0.95, 0.9999, 0.1])
    router = Router(snapshot(catalog=SPLIT_ROUTE), rand=rand)
    versions = []
    for _ in range(7):
        result = router.pick("catalog")
        assert isinstance(result, Endpoint), result
        versions.append(result.version)
    assert versions == ["v1", "v1", "v1", "v2", "v2", "v2", "v1"]


def test_split_round_robins_within_the_chosen_version() -> None:
    router = Router(snapshot(catalog=SPLIT_ROUTE), rand=lambda: 0.0)
    assert picked(router, "catalog", 4) == ["c-v1-1", "c-v1-2", "c-v1-1", "c-v1-2"]


def test_a_zero_weight_version_is_never_picked() -> None:
    route = Route(endpoints=(ep("a", "v1"), ep("b", "v2")), split={"v1": 0.0, "v2": 100.0})
    router = Router(snapshot(catalog=route), rand=sequence([0.0, 0.5, 0.99999]))
    assert picked(router, "catalog", 3) == ["b", "b", "b"]


@pytest.mark.parametrize(
    "weights",
    [{"v1": 70.0, "v2": 20.0, "v3": 10.0}, {"v1": 50.0, "v2": 50.0}, {"v1": 99.0, "v2": 1.0}],
)
def test_split_shares_match_the_weights_statistically(weights: Mapping[str, float]) -> None:
    endpoints = tuple(ep(f"c-{v}-1", v, i + 1) for i, v in enumerate(weights))
    router = Router(
        snapshot(catalog=Route(endpoints=endpoints, split=weights)),
        rand=random.Random(1234).random,
    )
    n = 10_000
    counts = Counter(
        r.version for r in (router.pick("catalog") for _ in range(n)) if isinstance(r, Endpoint)
    )
    assert sum(counts.values()) == n
    for version, weight in weights.items():
        share = 100.0 * counts[version] / n
        assert abs(share - weight) <= 1.5, f"{version}: {share:.2f}% for weight {weight}%"


def test_split_naming_a_version_without_endpoints_is_no_endpoint_naming_the_version() -> None:
    route = Route(endpoints=(ep("c-v1-1", "v1"),), split={"v1": 50.0, "v2": 50.0})
    router = Router(snapshot(catalog=route), rand=sequence([0.75, 0.25]))
    missing = router.pick("catalog")
    assert isinstance(missing, NoEndpoint)
    assert "catalog" in missing.reason
    assert "v2" in missing.reason
    assert picked(router, "catalog", 1) == ["c-v1-1"]


def test_update_swaps_the_snapshot_for_the_next_pick() -> None:
    old = snapshot(1, catalog=Route(endpoints=(ep("old-1", port=1), ep("old-2", port=2))))
    new = snapshot(2, catalog=Route(endpoints=(ep("new-1", port=3), ep("new-2", port=4))))
    router = Router(old)
    assert picked(router, "catalog", 1) == ["old-1"]
    router.update(new)
    assert router.snapshot is new
    after = picked(router, "catalog", 4)
    assert set(after) == {"new-1", "new-2"}
    assert Counter(after) == Counter({"new-1": 2, "new-2": 2})


def test_update_can_remove_a_service_and_add_another() -> None:
    router = Router(snapshot(1, catalog=Route(endpoints=(ep("c-1"),))))
    router.update(snapshot(2, pricing=Route(endpoints=(ep("p-1"),))))
    assert isinstance(router.pick("catalog"), NoEndpoint)
    assert picked(router, "pricing", 1) == ["p-1"]


VERSIONED = snapshot(
    catalog=Route(
        endpoints=(ep("c-v1-1", "v1"), ep("c-rc-2-1", "rc-2")),
        split={"v1": 100.0, "rc-2": 0.0},
        versions=("v1", "rc-2"),
    ),
    pricing=Route(endpoints=(ep("p-1", "default"),)),
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("catalog", ("catalog", None)),
        ("catalog-v1", ("catalog", "v1")),
        ("catalog-rc-2", ("catalog", "rc-2")),
        ("pricing", ("pricing", None)),
        ("pricing-default", None),  # an unversioned service has no version hosts
        ("catalog-v3", None),
        ("elsewhere", None),
        ("", None),
    ],
)
def test_a_host_names_a_service_or_one_of_its_versions(
    host: str, expected: tuple[str, str | None] | None
) -> None:
    assert Router(VERSIONED).resolve(host) == expected


def test_a_version_host_goes_to_that_version_whatever_the_split() -> None:
    router = Router(VERSIONED)
    for _ in range(3):
        chosen = router.pick("catalog", "rc-2")
        assert isinstance(chosen, Endpoint)
        assert chosen.instance == "c-rc-2-1"


# -- another endpoint than the one a request could not reach ------------------------


def answered_with_failover(router: Router, service: str, dead: str, n: int) -> list[str]:
    """Who answers ``n`` requests when ``dead`` takes none: a pick, then ``pick_other``."""
    out = []
    for _ in range(n):
        chosen = router.pick(service)
        assert isinstance(chosen, Endpoint), chosen
        if chosen.instance == dead:
            chosen = router.pick_other(service, chosen)
            assert isinstance(chosen, Endpoint), chosen
        out.append(chosen.instance)
    return out


def test_pick_other_never_gives_the_endpoint_to_avoid() -> None:
    route = Route(endpoints=(ep("a-1", port=1), ep("a-2", port=2), ep("a-3", port=3)))
    router = Router(snapshot(catalog=route))
    for avoid in route.endpoints:
        for _ in range(6):
            other = router.pick_other("catalog", avoid)
            assert isinstance(other, Endpoint), other
            assert other.instance != avoid.instance


def test_the_endpoints_left_share_the_load_of_one_that_takes_none() -> None:
    route = Route(endpoints=(ep("a-1", port=1), ep("a-2", port=2), ep("a-3", port=3)))
    router = Router(snapshot(catalog=route))
    answered = answered_with_failover(router, "catalog", "a-1", 12)
    assert Counter(answered) == Counter({"a-2": 6, "a-3": 6})


def test_second_tries_leave_the_round_robin_of_first_tries_as_it_was() -> None:
    # An endpoint that takes nothing is tried first only as often as without second tries.
    route = Route(endpoints=(ep("a-1", port=1), ep("a-2", port=2)))
    router = Router(snapshot(catalog=route))
    firsts = []
    for _ in range(6):
        first = router.pick("catalog")
        assert isinstance(first, Endpoint)
        firsts.append(first.instance)
        if first.instance == "a-1":
            router.pick_other("catalog", first)
    assert firsts == ["a-1", "a-2"] * 3


def test_pick_other_of_the_only_endpoint_is_no_endpoint_naming_it() -> None:
    router = Router(snapshot(catalog=Route(endpoints=(ep("c-1"),))))
    only = router.pick("catalog")
    assert isinstance(only, Endpoint)
    result = router.pick_other("catalog", only)
    assert isinstance(result, NoEndpoint)
    assert "catalog" in result.reason
    assert "c-1" in result.reason


def test_pick_other_knows_an_endpoint_by_its_instance() -> None:
    # The snapshot changed between the two tries: the same instance at another address
    # is still the instance that did not take the request.
    router = Router(snapshot(catalog=Route(endpoints=(ep("c-1", port=9), ep("c-2", port=2)))))
    moved = ep("c-1", port=1)
    for _ in range(4):
        other = router.pick_other("catalog", moved)
        assert isinstance(other, Endpoint)
        assert other.instance == "c-2"


def test_pick_other_without_a_split_may_go_to_another_version() -> None:
    route = Route(endpoints=(ep("c-v1-1", "v1", 1), ep("c-v2-1", "v2", 2)), versions=("v1", "v2"))
    router = Router(snapshot(catalog=route))
    other = router.pick_other("catalog", route.endpoints[0])
    assert isinstance(other, Endpoint)
    assert other.instance == "c-v2-1"


def test_pick_other_stays_within_the_version_the_split_chose() -> None:
    # SPLIT_ROUTE: v1 is c-v1-1 and c-v1-2, v2 only c-v2-1; pick_other draws no random number.
    router = Router(snapshot(catalog=SPLIT_ROUTE), rand=sequence([0.0]))
    first = router.pick("catalog")
    assert isinstance(first, Endpoint)
    assert first.instance == "c-v1-1"
    for _ in range(4):
        other = router.pick_other("catalog", first)
        assert isinstance(other, Endpoint)
        assert other.instance == "c-v1-2"
    v2 = SPLIT_ROUTE.endpoints[1]
    result = router.pick_other("catalog", v2)
    assert isinstance(result, NoEndpoint), "the split chose v2: another version will not do"
    assert "version v2" in result.reason


def test_pick_other_stays_within_the_version_a_host_named() -> None:
    route = Route(
        endpoints=(ep("c-v1-1", "v1", 1), ep("c-rc-1", "rc", 2), ep("c-rc-2", "rc", 3)),
        versions=("v1", "rc"),
    )
    router = Router(snapshot(catalog=route))
    avoid = route.endpoints[1]
    for _ in range(4):
        other = router.pick_other("catalog", avoid, "rc")
        assert isinstance(other, Endpoint)
        assert other.instance == "c-rc-2"
    alone = router.pick_other("catalog", route.endpoints[0], "v1")
    assert isinstance(alone, NoEndpoint)
    assert "version v1" in alone.reason


def test_pick_other_of_a_service_gone_from_the_snapshot_is_no_endpoint() -> None:
    router = Router(snapshot(1, catalog=Route(endpoints=(ep("c-1"), ep("c-2")))))
    first = router.pick("catalog")
    assert isinstance(first, Endpoint)
    router.update(snapshot(2, pricing=Route(endpoints=(ep("p-1"),))))
    result = router.pick_other("catalog", first)
    assert isinstance(result, NoEndpoint)
    assert "catalog" in result.reason
