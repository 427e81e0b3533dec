"""proxy.router: which service and version a call goes to (hosts, pins, weighted split)."""

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


def chosen(
    router: Router, service: str, version: str | None = None
) -> tuple[str | None, list[str]]:
    """The version a call goes to and the instances it may go to."""
    result = router.target(service, version)
    assert not isinstance(result, NoEndpoint), result
    drawn, endpoints = result
    return drawn, [e.instance for e in endpoints]


def test_without_a_split_every_endpoint_may_take_the_call() -> None:
    route = Route(endpoints=(ep("a-1", port=1), ep("a-2", port=2), ep("a-3", port=3)))
    router = Router(snapshot(catalog=route))
    assert chosen(router, "catalog") == (None, ["a-1", "a-2", "a-3"])


def test_unknown_service_is_no_endpoint_naming_it() -> None:
    router = Router(snapshot(catalog=Route(endpoints=(ep("c-1"),))))
    result = router.target("billing")
    assert isinstance(result, NoEndpoint)
    assert "billing" in result.reason
    assert chosen(router, "catalog") == (None, ["c-1"])


def test_known_service_without_endpoints_is_no_endpoint() -> None:
    router = Router(snapshot(catalog=Route(endpoints=())))
    result = router.target("catalog")
    assert isinstance(result, NoEndpoint)
    assert "catalog" in result.reason


SPLIT_ROUTE = Route(
    endpoints=(ep("c-v1-1", "v1", 1), ep("c-v2-1", "v2", 2), ep("c-v1-2", "v1", 3)),
    split={"v1": 90.0, "v2": 10.0},
)


def test_split_picks_the_version_whose_weight_band_holds_the_random_point() -> None:
    rand = sequence([0.0, 0.5, 0.8999, 0.9, 0.95, 0.9999, 0.1])
    router = Router(snapshot(catalog=SPLIT_ROUTE), rand=rand)
    versions = [chosen(router, "catalog")[0] for _ in range(7)]
    assert versions == ["v1", "v1", "v1", "v2", "v2", "v2", "v1"]


def test_split_offers_only_the_chosen_versions_endpoints() -> None:
    router = Router(snapshot(catalog=SPLIT_ROUTE), rand=lambda: 0.0)
    assert chosen(router, "catalog") == ("v1", ["c-v1-1", "c-v1-2"])


def test_a_zero_weight_version_is_never_picked() -> None:
    route = Route(endpoints=(ep("a", "v1"), ep("b", "v2")), split={"v1": 0.0, "v2": 100.0})
    router = Router(snapshot(catalog=route), rand=sequence([0.0, 0.5, 0.99999]))
    assert [chosen(router, "catalog") for _ in range(3)] == [("v2", ["b"])] * 3


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
    counts = Counter(chosen(router, "catalog")[0] for _ in range(n))
    assert sum(counts.values()) == n
    for version, weight in weights.items():
        share = 100.0 * counts[version] / n
        assert abs(share - weight) <= 1.5, f"{version}: {share:.2f}% for weight {weight}%"


def test_split_naming_a_version_without_endpoints_is_no_endpoint_naming_the_version() -> None:
    route = Route(endpoints=(ep("c-v1-1", "v1"),), split={"v1": 50.0, "v2": 50.0})
    router = Router(snapshot(catalog=route), rand=sequence([0.75, 0.25]))
    missing = router.target("catalog")
    assert isinstance(missing, NoEndpoint)
    assert "catalog" in missing.reason
    assert "v2" in missing.reason
    assert chosen(router, "catalog") == ("v1", ["c-v1-1"])


def test_update_swaps_the_snapshot_for_the_next_call_and_tells_subscribers() -> None:
    old = snapshot(1, catalog=Route(endpoints=(ep("old-1", port=1), ep("old-2", port=2))))
    new = snapshot(2, catalog=Route(endpoints=(ep("new-1", port=3), ep("new-2", port=4))))
    router = Router(old)
    seen: list[Snapshot] = []
    router.subscribe(seen.append)
    assert chosen(router, "catalog") == (None, ["old-1", "old-2"])
    router.update(new)
    assert router.snapshot is new
    assert seen == [new]
    assert chosen(router, "catalog") == (None, ["new-1", "new-2"])


def test_update_can_remove_a_service_and_add_another() -> None:
    router = Router(snapshot(1, catalog=Route(endpoints=(ep("c-1"),))))
    router.update(snapshot(2, pricing=Route(endpoints=(ep("p-1"),))))
    assert isinstance(router.target("catalog"), NoEndpoint)
    assert chosen(router, "pricing") == (None, ["p-1"])


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
        assert chosen(router, "catalog", "rc-2") == ("rc-2", ["c-rc-2-1"])


def test_a_version_the_service_does_not_have_is_no_endpoint_naming_its_versions() -> None:
    result = Router(VERSIONED).target("catalog", "v9")
    assert isinstance(result, NoEndpoint)
    assert "catalog has no version 'v9' (its versions: v1, rc-2)" in result.reason
