"""proxy.balancer: round robin and least-request over the endpoints the breaker left in."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import pytest

from proxy.balancer import Balancer, Policy, Unavailable

ABC = ["a", "b", "c"]


def sequence(values: Iterable[float]) -> Callable[[], float]:
    """A deterministic ``rand`` handing out ``values`` in order (fails if it runs out)."""
    it = iter(values)
    return lambda: next(it)


def picks(
    balancer: Balancer,
    endpoints: Sequence[str],
    n: int,
    ejected: Mapping[str, float] | None = None,
) -> list[str]:
    out = []
    for _ in range(n):
        result = balancer.pick(endpoints, ejected or {})
        assert isinstance(result, str), result
        out.append(result)
    return out


# round robin


def test_round_robin_takes_each_endpoint_in_turn() -> None:
    assert picks(Balancer(), ABC, 9) == ABC * 3


def test_round_robin_skips_ejected_endpoints_and_stays_even_over_the_rest() -> None:
    balancer = Balancer()
    assert picks(balancer, ABC, 6, {"b": 30.0}) == ["a", "c"] * 3
    counts = Counter(picks(balancer, ["a", "b", "c", "d"], 3000, {"b": 30.0}))
    assert counts == {"a": 1000, "c": 1000, "d": 1000}


def test_round_robin_takes_an_endpoint_back_when_it_is_no_longer_ejected() -> None:
    balancer = Balancer()
    assert picks(balancer, ABC, 2, {"a": 30.0}) == ["b", "c"]
    assert picks(balancer, ABC, 6) == ABC * 2


def test_round_robin_follows_a_changed_endpoint_list() -> None:
    balancer = Balancer()
    picks(balancer, ABC, 2)
    counts = Counter(picks(balancer, ["a", "b", "c", "d"], 400))
    assert counts == {"a": 100, "b": 100, "c": 100, "d": 100}


# least request


def test_least_request_takes_the_drawn_endpoint_with_fewer_active_requests() -> None:
    balancer = Balancer("least-request", rand=sequence([0.0, 0.7, 0.7, 0.0]))
    balancer.started("a")
    assert balancer.pick(["a", "b"]) == "b"  # drew a then b
    assert balancer.pick(["a", "b"]) == "b"  # drew b then a


def test_least_request_keeps_the_first_drawn_on_a_tie() -> None:
    balancer = Balancer("least-request", rand=sequence([0.0, 0.7, 0.7, 0.0]))
    assert balancer.pick(["a", "b"]) == "a"
    assert balancer.pick(["a", "b"]) == "b"


def test_least_request_prefers_the_idle_endpoint() -> None:
    """Two draws with replacement (Envoy's): the busy one of two wins only when both
    draws are it, 1/4 of the time; 10,000 picks land within +-2 points (>4 sigma)."""
    balancer = Balancer("least-request", rand=random.Random(4).random)
    for _ in range(3):
        balancer.started("busy")
    counts = Counter(balancer.pick(["busy", "idle"]) for _ in range(10_000))
    assert 0.73 <= counts["idle"] / 10_000 <= 0.77, counts


def test_least_request_avoids_one_busy_endpoint_among_three() -> None:
    """The busy one is taken only if both draws hit it: 1/9; within +-1.5 points."""
    balancer = Balancer("least-request", rand=random.Random(5).random)
    balancer.started("b")
    counts = Counter(picks(balancer, ABC, 10_000))
    assert 0.096 <= counts["b"] / 10_000 <= 0.126, counts
    assert abs(counts["a"] - counts["c"]) / 10_000 <= 0.03, counts


def test_least_request_spreads_evenly_over_idle_endpoints() -> None:
    balancer = Balancer("least-request", rand=random.Random(6).random)
    counts = Counter(picks(balancer, ABC, 9_000))
    for instance in ABC:
        assert 2_850 <= counts[instance] <= 3_150, counts


def test_least_request_never_picks_an_ejected_endpoint() -> None:
    balancer = Balancer("least-request", rand=random.Random(7).random)
    balancer.started("a")
    counts = Counter(picks(balancer, ABC, 2_000, {"b": 10.0, "c": 10.0}))
    assert counts == {"a": 2_000}


def test_least_request_with_one_eligible_endpoint_draws_nothing() -> None:
    balancer = Balancer("least-request", rand=sequence([]))
    assert balancer.pick(ABC, {"a": 1.0, "c": 1.0}) == "b"


def test_the_policy_can_change_live() -> None:
    balancer = Balancer(rand=sequence([0.0, 0.9]))
    assert picks(balancer, ["a", "b"], 2) == ["a", "b"]
    balancer.policy = "least-request"
    balancer.started("a")
    assert balancer.pick(["a", "b"]) == "b"


# active requests


def test_active_requests_are_counted_and_never_go_below_zero() -> None:
    balancer = Balancer()
    balancer.started("a")
    balancer.started("a")
    assert balancer.active("a") == 2
    balancer.finished("a")
    balancer.finished("a")
    balancer.finished("a")
    assert balancer.active("a") == 0
    balancer.started("a")
    assert balancer.active("a") == 1


def test_track_counts_a_request_for_the_block_even_when_it_raises() -> None:
    balancer = Balancer()
    with balancer.track("a"):
        assert balancer.active("a") == 1
    assert balancer.active("a") == 0
    with pytest.raises(RuntimeError), balancer.track("a"):
        raise RuntimeError("upstream reset")
    assert balancer.active("a") == 0


# nothing to pick


def test_no_endpoints_at_all() -> None:
    result = Balancer().pick([])
    assert result == Unavailable("no-endpoints", ejected=0, retry_at=None)
    assert result.describe("catalog", now=0.0) == "no healthy instance of catalog"


@pytest.mark.parametrize("policy", ["round-robin", "least-request"])
def test_all_ejected_says_when_the_first_is_tried_again(policy: Policy) -> None:
    balancer = Balancer(policy)
    result = balancer.pick(ABC, {"a": 130.0, "b": 112.5, "c": 200.0, "gone": 101.0})
    assert result == Unavailable("all-ejected", ejected=3, retry_at=112.5)
    assert isinstance(result, Unavailable)
    assert result.describe("catalog", now=100.0) == (
        "all 3 instances of catalog are ejected by the circuit breaker; "
        "the first is tried again in 12.5s"
    )


def test_the_only_endpoint_ejected() -> None:
    result = Balancer().pick(["a"], {"a": 130.0})
    assert isinstance(result, Unavailable)
    assert result.describe("pricing", now=100.0) == (
        "the only instance of pricing is ejected by the circuit breaker; it is tried again in 30.0s"
    )
