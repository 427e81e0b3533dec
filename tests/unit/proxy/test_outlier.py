"""proxy.outlier: Envoy's consecutive-5xx outlier detection, driven by a simulated clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.outlier import (
    BreakerSummary,
    EndpointState,
    LocalFailure,
    Outcome,
    OutlierDetector,
    OutlierSettings,
    in_panic,
)

E503 = Outcome.status(503)
OK = Outcome.status(200)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def detector(
    n: int = 3, clock: Clock | None = None, **settings: Any
) -> tuple[OutlierDetector, Clock]:
    clock = clock or Clock()
    instances = [f"ep-{i}" for i in range(n)]
    return OutlierDetector(clock, OutlierSettings(**settings), instances), clock


def fail(d: OutlierDetector, instance: str, times: int = 5, outcome: Outcome = E503) -> None:
    for _ in range(times):
        d.record(instance, outcome)


def endpoint(d: OutlierDetector, instance: str) -> EndpointState:
    ep = d.endpoint(instance)
    assert ep is not None, instance
    return ep


def state_of(d: OutlierDetector, instance: str) -> str:
    return endpoint(d, instance).state


def retry_in(d: OutlierDetector, clock: Clock, instance: str) -> float:
    retry_at = endpoint(d, instance).retry_at
    assert retry_at is not None, endpoint(d, instance)
    return retry_at - clock.now


# consecutive failures


def test_the_defaults_are_envoys() -> None:
    s = OutlierSettings()
    assert (s.consecutive_5xx, s.interval, s.base_ejection_time) == (5, 10.0, 30.0)
    assert (s.max_ejection_time, s.max_ejection_percent) == (300.0, 10.0)
    assert s.panic_threshold == 50.0


def test_exactly_five_consecutive_5xx_eject() -> None:
    d, _ = detector()
    fail(d, "ep-0", 4)
    assert not d.is_ejected("ep-0")
    assert state_of(d, "ep-0") == "closed"
    d.record("ep-0", Outcome.status(500))
    assert d.is_ejected("ep-0")
    assert state_of(d, "ep-0") == "open"


def test_four_5xx_then_a_success_do_not_eject_and_the_run_starts_again() -> None:
    d, _ = detector()
    fail(d, "ep-0", 4)
    d.record("ep-0", OK)
    fail(d, "ep-0", 4)
    assert not d.is_ejected("ep-0")
    d.record("ep-0", E503)
    assert d.is_ejected("ep-0")


@pytest.mark.parametrize("code", [200, 204, 301, 404, 429, 499])
def test_any_status_below_500_is_a_success(code: int) -> None:
    d, _ = detector()
    fail(d, "ep-0", 4)
    d.record("ep-0", Outcome.status(code))
    d.record("ep-0", E503)
    assert not d.is_ejected("ep-0")


def test_overflow_neither_counts_nor_resets() -> None:
    d, _ = detector()
    for _ in range(20):
        d.record("ep-0", Outcome.overflow())
    assert not d.is_ejected("ep-0")
    fail(d, "ep-0", 4)
    for _ in range(20):
        d.record("ep-0", Outcome.overflow())
    ep = endpoint(d, "ep-0")
    assert ep.consecutive_failures == 4
    d.record("ep-0", E503)
    assert d.is_ejected("ep-0")


@pytest.mark.parametrize("what", ["connect-failure", "reset", "timeout"])
def test_local_origin_failures_count_like_5xx(what: LocalFailure) -> None:
    d, _ = detector()
    fail(d, "ep-0", 5, Outcome.local_failure(what))
    assert d.is_ejected("ep-0")
    assert d.summary().reason == f"5 consecutive failures (last: {what})"


def test_a_run_mixing_5xx_and_local_failures_is_called_failures() -> None:
    d, _ = detector()
    d.record("ep-0", Outcome.local_failure("reset"))
    fail(d, "ep-0", 4, Outcome.status(502))
    assert d.summary().reason == "5 consecutive failures (last: 502)"


def test_a_run_of_5xx_names_the_last_status() -> None:
    d, _ = detector()
    fail(d, "ep-0", 4, Outcome.status(500))
    d.record("ep-0", Outcome.status(503))
    assert d.summary().reason == "5 consecutive 5xx (last: 503)"


def test_consecutive_5xx_setting_is_honoured() -> None:
    d, _ = detector(consecutive_5xx=2, max_ejection_percent=100)
    fail(d, "ep-0", 1)
    assert not d.is_ejected("ep-0")
    fail(d, "ep-0", 1)
    assert d.is_ejected("ep-0")
    d.set_settings(OutlierSettings(consecutive_5xx=3, max_ejection_percent=100))
    fail(d, "ep-1", 2)
    assert not d.is_ejected("ep-1")
    fail(d, "ep-1", 1)
    assert d.is_ejected("ep-1")


# max ejection percent


def test_ten_endpoints_allow_one_ejection_the_second_failing_one_stays() -> None:
    d, _ = detector(10)
    fail(d, "ep-0")
    fail(d, "ep-1")
    assert d.is_ejected("ep-0")
    assert not d.is_ejected("ep-1")
    assert d.summary().ejected == 1


def test_twenty_endpoints_allow_two_ejections() -> None:
    d, _ = detector(20)
    for i in range(3):
        fail(d, f"ep-{i}")
    assert [d.is_ejected(f"ep-{i}") for i in range(3)] == [True, True, False]


@pytest.mark.parametrize("n", [1, 2])
def test_one_endpoint_may_always_be_ejected(n: int) -> None:
    d, _ = detector(n)
    for i in range(n):
        fail(d, f"ep-{i}")
    assert d.is_ejected("ep-0")
    if n == 2:
        assert not d.is_ejected("ep-1")


def test_a_refused_ejection_starts_the_run_again_as_in_envoy() -> None:
    d, clock = detector(10)
    fail(d, "ep-0")
    fail(d, "ep-1")
    ep1 = endpoint(d, "ep-1")
    assert (ep1.consecutive_failures, ep1.ejections) == (0, 0)
    clock.advance(30)
    d.record("ep-0", OK)  # back in service: room for one ejection again
    fail(d, "ep-1", 4)
    assert not d.is_ejected("ep-1")
    fail(d, "ep-1", 1)
    assert d.is_ejected("ep-1")


def test_a_half_open_failure_beyond_the_limit_returns_the_endpoint_to_closed() -> None:
    d, clock = detector(10)
    fail(d, "ep-0")
    clock.advance(30)
    assert state_of(d, "ep-0") == "half-open"
    fail(d, "ep-1")  # ep-0 no longer counts as ejected: ep-1 may go
    assert d.is_ejected("ep-1")
    d.record("ep-0", E503)
    assert state_of(d, "ep-0") == "closed"
    assert d.summary().ejected == 1


# ejection time


def test_ejection_time_grows_30_60_90_up_to_300() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    seen = []
    for _ in range(12):
        seen.append(retry_in(d, clock, "ep-0"))
        clock.advance(seen[-1])
        assert state_of(d, "ep-0") == "half-open"
        d.record("ep-0", E503)
    assert seen == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 300, 300]
    ep = endpoint(d, "ep-0")
    assert ep.ejections == 13


def test_base_and_max_ejection_time_settings_are_honoured() -> None:
    d, clock = detector(base_ejection_time=5.0, max_ejection_time=12.0)
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 5.0
    clock.advance(5)
    d.record("ep-0", E503)
    assert retry_in(d, clock, "ep-0") == 10.0
    clock.advance(10)
    d.record("ep-0", E503)
    assert retry_in(d, clock, "ep-0") == 12.0


def test_an_endpoint_stays_open_until_its_time_is_up() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(29.999)
    assert d.is_ejected("ep-0")
    assert d.eligible(["ep-0", "ep-1"]) == ["ep-1"]
    clock.advance(0.001)
    assert not d.is_ejected("ep-0")
    assert state_of(d, "ep-0") == "half-open"
    assert d.eligible(["ep-0", "ep-1"]) == ["ep-0", "ep-1"]


def test_results_arriving_while_open_change_nothing() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(10)
    d.record("ep-0", OK)
    fail(d, "ep-0", 10)
    assert d.is_ejected("ep-0")
    assert retry_in(d, clock, "ep-0") == 20.0
    ep = endpoint(d, "ep-0")
    assert ep.ejections == 1


# half-open


def test_half_open_success_closes() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(30)
    d.record("ep-0", Outcome.overflow())
    assert state_of(d, "ep-0") == "half-open"
    d.record("ep-0", OK)
    assert state_of(d, "ep-0") == "closed"
    fail(d, "ep-0", 4)  # a fresh run of five is needed again
    assert not d.is_ejected("ep-0")
    d.record("ep-0", E503)
    assert d.is_ejected("ep-0")


def test_half_open_failure_ejects_again_at_once_for_longer() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(30)
    d.record("ep-0", Outcome.local_failure("timeout"))
    assert d.is_ejected("ep-0")
    assert retry_in(d, clock, "ep-0") == 60.0
    assert d.summary().reason == "failed while half-open (last: timeout)"


def test_half_open_endpoint_keeps_the_reason_of_its_ejection() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(30)
    ep = d.endpoint("ep-0")
    assert ep is not None
    assert (ep.state, ep.reason, ep.retry_at) == (
        "half-open",
        "5 consecutive 5xx (last: 503)",
        None,
    )


# decay of the multiplier


def eject_twice_then_close(d: OutlierDetector, clock: Clock) -> None:
    fail(d, "ep-0")
    clock.advance(30)
    d.record("ep-0", E503)
    clock.advance(60)
    d.record("ep-0", OK)
    ep = endpoint(d, "ep-0")
    assert (ep.state, ep.multiplier) == ("closed", 2)


def test_one_healthy_interval_takes_one_off_the_multiplier() -> None:
    d, clock = detector()
    eject_twice_then_close(d, clock)
    clock.advance(9.9)
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 90.0  # no full interval yet: third ejection


def test_the_multiplier_decays_per_healthy_interval() -> None:
    d, clock = detector()
    eject_twice_then_close(d, clock)
    clock.advance(10)
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 60.0  # 2 - 1 + 1


def test_the_multiplier_decays_to_zero_and_no_further() -> None:
    d, clock = detector()
    eject_twice_then_close(d, clock)
    clock.advance(1000)
    ep = endpoint(d, "ep-0")
    assert (ep.multiplier, ep.ejections) == (0, 2)
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 30.0


def test_a_failure_restarts_the_healthy_interval() -> None:
    d, clock = detector()
    eject_twice_then_close(d, clock)
    clock.advance(5)
    d.record("ep-0", E503)
    d.record("ep-0", OK)
    clock.advance(9)  # 14 s after closing, but only 9 s since the failure
    ep = endpoint(d, "ep-0")
    assert ep.multiplier == 2
    clock.advance(1)
    ep = endpoint(d, "ep-0")
    assert ep.multiplier == 1


def test_no_decay_while_open_or_half_open() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(500)  # half-open since 470 s, never tried
    ep = endpoint(d, "ep-0")
    assert (ep.state, ep.multiplier) == ("half-open", 1)
    d.record("ep-0", E503)
    assert retry_in(d, clock, "ep-0") == 60.0


def test_the_multiplier_stops_growing_past_the_cap_as_in_envoy() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    for _ in range(15):
        clock.advance(retry_in(d, clock, "ep-0"))
        d.record("ep-0", E503)
    ep = endpoint(d, "ep-0")
    assert ep.multiplier == 11  # Envoy: grows while base * n < max + base
    clock.advance(retry_in(d, clock, "ep-0"))
    d.record("ep-0", OK)
    clock.advance(20)  # two healthy intervals: 11 -> 9, the next ejection is the 10th step
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 300.0
    clock.advance(300)
    d.record("ep-0", OK)
    clock.advance(30)  # 10 -> 7
    fail(d, "ep-0")
    assert retry_in(d, clock, "ep-0") == 240.0


# endpoints joining and leaving


def test_new_endpoints_start_closed_and_removed_ones_are_forgotten() -> None:
    d, _ = detector(2)
    fail(d, "ep-0")
    d.set_endpoints(["ep-1", "ep-2"])
    assert [e.instance for e in d.endpoints()] == ["ep-1", "ep-2"]
    assert state_of(d, "ep-2") == "closed"
    assert d.record("ep-0", E503) is None
    assert d.endpoint("ep-0") is None
    assert not d.is_ejected("ep-0")
    d.set_endpoints(["ep-0", "ep-1", "ep-2"])
    ep = endpoint(d, "ep-0")
    assert (ep.state, ep.ejections, ep.multiplier) == ("closed", 0, 0)


def test_endpoints_kept_across_an_update_keep_their_state() -> None:
    d, _ = detector(2)
    fail(d, "ep-0")
    fail(d, "ep-1", 3)
    d.set_endpoints(["ep-0", "ep-1", "ep-9"])
    assert d.is_ejected("ep-0")
    fail(d, "ep-1", 2)
    assert state_of(d, "ep-1") == "closed"  # 1 of 3 already out: refused
    assert d.summary().total == 3


def test_the_ejection_limit_follows_the_endpoint_count() -> None:
    d, _ = detector(10)
    fail(d, "ep-0")
    d.set_endpoints([f"ep-{i}" for i in range(20)])
    fail(d, "ep-15")
    assert d.is_ejected("ep-15")
    assert d.summary().ejected == 2


# summary and JSON


def test_summary_is_closed_with_no_trouble() -> None:
    d, _ = detector()
    fail(d, "ep-0", 4)
    assert d.summary() == BreakerSummary(
        state="closed",
        instance=None,
        reason=None,
        retry_at=None,
        ejected=0,
        half_open=0,
        total=3,
    )


def test_summary_open_gives_the_reason_and_a_countdown() -> None:
    d, clock = detector()
    fail(d, "ep-1")
    clock.advance(17.5)
    data = d.to_json()
    json.dumps(data)
    assert {k: v for k, v in data.items() if k != "endpoints"} == {
        "state": "open",
        "instance": "ep-1",
        "reason": "5 consecutive 5xx (last: 503)",
        "retry_in": 12.5,
        "ejected": 1,
        "half_open": 0,
        "total": 3,
        "ejections": 1,
        "panic": False,
    }
    assert data["endpoints"][1] == {
        "instance": "ep-1",
        "state": "open",
        "reason": "5 consecutive 5xx (last: 503)",
        "retry_in": 12.5,
        "ejections": 1,
        "consecutive_failures": 0,
    }
    assert data["endpoints"][0]["state"] == "closed"
    assert data["endpoints"][0]["retry_in"] is None


def test_summary_open_shows_the_endpoint_that_retries_soonest() -> None:
    d, clock = detector(2, max_ejection_percent=100)
    fail(d, "ep-0")  # retries at +30
    clock.advance(30)
    d.record("ep-0", E503)  # retries at +60 from now
    clock.advance(10)
    fail(d, "ep-1", 5, Outcome.local_failure("connect-failure"))  # retries in 30
    summary = d.summary()
    assert (summary.state, summary.instance, summary.ejected) == ("open", "ep-1", 2)
    assert summary.reason == "5 consecutive failures (last: connect-failure)"
    assert summary.retry_at == clock.now + 30


def test_summary_open_wins_over_half_open() -> None:
    d, clock = detector(2, max_ejection_percent=100)
    fail(d, "ep-0")
    clock.advance(20)
    fail(d, "ep-1")
    clock.advance(10)
    summary = d.summary()
    assert (summary.state, summary.instance, summary.half_open) == ("open", "ep-1", 1)
    clock.advance(20)
    summary = d.summary()
    assert (summary.state, summary.half_open, summary.retry_at) == ("half-open", 2, None)
    assert d.to_json()["retry_in"] is None


# notifications


def test_state_changes_are_reported_once_each() -> None:
    clock = Clock()
    changes: list[tuple[str, int]] = []
    d = OutlierDetector(
        clock, instances=["a", "b"], on_change=lambda s: changes.append((s.state, s.ejected))
    )
    fail(d, "a", 4)
    d.record("b", OK)
    assert changes == []
    d.record("a", E503)
    assert changes == [("open", 1)]
    fail(d, "a", 3)
    clock.advance(29)
    d.tick()
    assert changes == [("open", 1)]
    clock.advance(1)
    d.eligible(["a", "b"])  # any call notices the time
    assert changes == [("open", 1), ("half-open", 0)]
    d.record("a", OK)
    assert changes == [("open", 1), ("half-open", 0), ("closed", 0)]


def test_a_second_ejection_and_a_removal_are_reported() -> None:
    clock = Clock()
    seen: list[BreakerSummary] = []
    d = OutlierDetector(
        clock, OutlierSettings(max_ejection_percent=100), ["a", "b", "c"], seen.append
    )
    fail(d, "a")
    fail(d, "b")
    assert [(s.state, s.ejected) for s in seen] == [("open", 1), ("open", 2)]
    d.set_endpoints(["c"])
    assert [(s.state, s.ejected, s.total) for s in seen][-1] == ("closed", 0, 1)


def test_next_change_is_when_the_first_open_endpoint_turns_half_open() -> None:
    d, clock = detector(3, max_ejection_percent=100)
    assert d.next_change() is None
    fail(d, "ep-0")
    clock.advance(5)
    fail(d, "ep-1")
    assert d.next_change() == clock.now + 25
    clock.advance(25)
    assert d.next_change() == clock.now + 5
    clock.advance(5)
    assert d.next_change() is None


def test_ejected_lists_open_endpoints_with_their_retry_time() -> None:
    d, clock = detector()
    fail(d, "ep-2")
    assert d.ejected() == {"ep-2": clock.now + 30}


# what is not the endpoint's doing


@pytest.mark.parametrize("why", ["downstream-reset", "body-timeout", "no-identity", "overflow"])
def test_what_is_not_the_endpoint_s_doing_neither_counts_nor_resets(why: str) -> None:
    d, _ = detector()
    for _ in range(20):
        d.record("ep-0", Outcome.not_the_endpoint(why))
    assert endpoint(d, "ep-0").consecutive_failures == 0
    fail(d, "ep-0", 4)
    d.record("ep-0", Outcome.not_the_endpoint(why))
    assert endpoint(d, "ep-0").consecutive_failures == 4, "a caller's hang-up is no success"
    d.record("ep-0", E503)
    assert d.is_ejected("ep-0")


def test_a_caller_hanging_up_on_a_half_open_endpoint_leaves_it_half_open() -> None:
    d, clock = detector()
    fail(d, "ep-0")
    clock.advance(30)
    d.record("ep-0", Outcome.not_the_endpoint("downstream-reset"))
    assert state_of(d, "ep-0") == "half-open"
    d.record("ep-0", OK)
    assert state_of(d, "ep-0") == "closed"


# the panic threshold


@pytest.mark.parametrize(
    ("size", "ejected", "threshold", "panic"),
    [
        (1, 1, 50.0, True),  # the only endpoint ejected: route to it all the same
        (2, 1, 50.0, False),  # half healthy is not fewer than half
        (3, 2, 50.0, True),
        (10, 1, 50.0, False),
        (10, 6, 50.0, True),
        (4, 1, 100.0, True),  # 100: any ejection routes to all
        (4, 0, 100.0, False),
        (1, 1, 0.0, False),  # 0: never (Istio's default)
        (3, 3, 0.0, False),
        (0, 0, 50.0, False),  # no endpoints: nothing to route to either way
    ],
)
def test_a_pool_is_in_panic_when_fewer_than_the_threshold_are_healthy(
    size: int, ejected: int, threshold: float, panic: bool
) -> None:
    pool = [f"ep-{i}" for i in range(size)]
    assert in_panic(pool, set(pool[:ejected]), threshold) is panic


def test_ejected_ids_outside_the_pool_do_not_count_against_it() -> None:
    assert not in_panic(["v1-1", "v1-2"], {"v2-1", "v2-2"}, 100.0)
