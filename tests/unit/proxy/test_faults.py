"""proxy.faults: matching, dice, combining, validation, wire form; pacing and hangs, fake clock.

Statistical tests use seeded randomness, so they are deterministic; their
tolerances are still stated as they would hold for any seed (about 4 standard
deviations or more).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.faults import (
    NO_FAULT,
    Decision,
    Fault,
    FaultError,
    Match,
    RequestInfo,
    check_bandwidth,
    check_hang,
    check_path_prefix,
    check_percent,
    check_seconds,
    check_status,
    decide,
    fault_to_wire,
    faults_to_wire,
    parse_fault,
    parse_faults,
)
from proxy.toxics import Throttle, delay, hang

GET = RequestInfo("GET", "/items/42", {}, "frontend")


def sequence(values: Iterable[float]) -> Callable[[], float]:
    """A deterministic ``rand`` handing out ``values`` in order (fails if it runs out)."""
    it = iter(values)
    return lambda: next(it)


def no_dice() -> float:
    raise AssertionError("rand was called")


def fraction(hits: int, n: int) -> float:
    return 100.0 * hits / n


# -- matching ------------------------------------------------------------------------------


def test_an_empty_match_matches_every_request() -> None:
    assert Match().matches("DELETE", "/", {}, None)
    assert Match().matches("GET", "/anything/at/all?x=1", {"x": "y"}, "frontend")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/items", True), ("/items/42", True), ("/itemsx", True), ("/item", False), ("/", False)],
)
def test_path_prefix_is_a_plain_string_prefix_as_in_istio(path: str, expected: bool) -> None:
    assert Match(path_prefix="/items").matches("GET", path, {}, None) is expected


@pytest.mark.parametrize("method", ["GET", "get", "Get"])
def test_method_compares_case_insensitively(method: str) -> None:
    assert Match(method="get").matches(method, "/", {}, None)
    assert Match(method="GET").matches(method, "/", {}, None)
    assert not Match(method="POST").matches(method, "/", {}, None)


def test_source_is_the_calling_service_exactly() -> None:
    match = Match(source="frontend")
    assert match.matches("GET", "/", {}, "frontend")
    assert not match.matches("GET", "/", {}, "catalog")
    assert not match.matches("GET", "/", {}, None)


def test_header_names_are_case_insensitive_and_values_exact() -> None:
    match = Match(headers=(("X-Env", "dev"),))
    assert match.matches("GET", "/", {"x-env": "dev"}, None)
    assert match.matches("GET", "/", {"X-ENV": "dev"}, None)
    assert not match.matches("GET", "/", {"x-env": "Dev"}, None)
    assert not match.matches("GET", "/", {"x-env": "dev "}, None)
    assert not match.matches("GET", "/", {}, None)


def test_every_header_must_match() -> None:
    match = Match(headers=(("x-env", "dev"), ("x-user", "ann")))
    assert match.matches("GET", "/", {"x-env": "dev", "x-user": "ann", "other": "1"}, None)
    assert not match.matches("GET", "/", {"x-env": "dev"}, None)
    assert not match.matches("GET", "/", {"x-env": "dev", "x-user": "bob"}, None)


def test_headers_as_aiohttp_gives_them_including_a_repeated_header() -> None:
    headers = CIMultiDictProxy(CIMultiDict([("X-Env", "prod"), ("x-env", "dev"), ("Host", "c")]))
    assert Match(headers=(("x-env", "dev"),)).matches("GET", "/", headers, None)
    assert Match(headers=(("X-ENV", "prod"),)).matches("GET", "/", headers, None)
    assert not Match(headers=(("x-env", "test"),)).matches("GET", "/", headers, None)


def test_a_repeated_header_in_a_plain_list_of_pairs_mapping_also_matches() -> None:
    class Pairs(dict[str, str]):
        """A mapping whose ``items`` repeats a name, as a raw header list would."""

        def items(self) -> Any:
            return [("X-Env", "prod"), ("X-Env", "dev")]

    assert Match(headers=(("x-env", "dev"),)).matches("GET", "/", Pairs(), None)


def test_all_conditions_of_a_match_must_hold() -> None:
    match = Match(path_prefix="/a", method="POST", headers=(("k", "v"),), source="web")
    assert match.matches("POST", "/a/1", {"k": "v"}, "web")
    for method, path, headers, source in [
        ("GET", "/a/1", {"k": "v"}, "web"),
        ("POST", "/b", {"k": "v"}, "web"),
        ("POST", "/a/1", {}, "web"),
        ("POST", "/a/1", {"k": "v"}, "api"),
    ]:
        assert not match.matches(method, path, headers, source)


def test_a_non_matching_fault_does_not_apply_and_rolls_no_dice() -> None:
    faults = [
        Fault(id="p", match=Match(path_prefix="/pricing"), delay=1.0, delay_percent=50),
        Fault(id="m", match=Match(method="POST"), abort_status=503, abort_percent=50),
        Fault(id="h", match=Match(headers=(("x-env", "prod"),)), bandwidth=10),
    ]
    assert decide(faults, GET, no_dice, now=0.0) is NO_FAULT


# -- no fault ------------------------------------------------------------------------------


def test_no_fault_is_falsy_and_the_shared_none_value() -> None:
    assert not NO_FAULT
    assert Decision.none is NO_FAULT
    assert decide((), GET, no_dice, now=0.0) is NO_FAULT
    assert decide([], GET, no_dice, now=0.0) is NO_FAULT


def test_a_fault_that_fires_makes_a_truthy_decision_naming_it() -> None:
    decision = decide([Fault(id="slow", delay=0.25)], GET, no_dice, now=0.0)
    assert decision
    assert decision == Decision(delay=0.25, fired=("slow",))


def test_certain_and_impossible_percentages_draw_no_dice() -> None:
    always = Fault(id="a", delay=0.1, abort_status=500)
    never = Fault(id="n", delay=0.1, delay_percent=0, abort_status=500, abort_percent=0.0)
    assert decide([always], GET, no_dice, now=0.0).fired == ("a",)
    assert decide([never], GET, no_dice, now=0.0) is NO_FAULT


def test_a_roll_fires_below_the_percentage_only() -> None:
    fault = Fault(id="f", abort_status=503, abort_percent=20)
    assert decide([fault], GET, sequence([0.1999]), now=0.0).abort_status == 503
    assert decide([fault], GET, sequence([0.2]), now=0.0) is NO_FAULT
    assert decide([fault], GET, sequence([0.0]), now=0.0).abort_status == 503


# -- percentages, statistically ------------------------------------------------------------

N = 10_000


@pytest.mark.parametrize("percent", [0.5, 20.0, 50.0, 99.5])
def test_abort_percent_holds_over_10000_requests_within_1_5_points(percent: float) -> None:
    """The standard deviation is at most 0.5 points at N = 10,000: ±1.5 is 3 of them."""
    rand = random.Random(1234)
    fault = Fault(id="f", abort_status=503, abort_percent=percent)
    hits = sum(bool(decide([fault], GET, rand, now=0.0)) for _ in range(N))
    assert abs(fraction(hits, N) - percent) <= 1.5


@pytest.mark.parametrize("percent", [0.1, 20.0, 75.0])
def test_delay_percent_holds_over_10000_requests_within_1_5_points(percent: float) -> None:
    rand = random.Random(99)
    fault = Fault(id="f", delay=0.05, delay_percent=percent)
    hits = sum(decide([fault], GET, rand.random, now=0.0).delay > 0 for _ in range(N))
    assert abs(fraction(hits, N) - percent) <= 1.5


def test_delay_and_abort_of_one_fault_are_independent() -> None:
    """P(delay) = 30 %, P(abort) = 40 %, P(both) = 12 %: each within 1.5 points."""
    rand = random.Random(7)
    fault = Fault(id="f", delay=0.1, delay_percent=30, abort_status=500, abort_percent=40)
    delayed = aborted = both = 0
    for _ in range(N):
        d = decide([fault], GET, rand, now=0.0)
        delayed += d.delay > 0
        aborted += d.abort_status is not None
        both += d.delay > 0 and d.abort_status is not None
    assert abs(fraction(delayed, N) - 30) <= 1.5
    assert abs(fraction(aborted, N) - 40) <= 1.5
    assert abs(fraction(both, N) - 12) <= 1.5
    # and the abort is as likely on a delayed request as on any: 40 % of delayed ones
    assert abs(100 * both / delayed - 40) <= 3.5  # sd about 0.9 points over ~3,000


def test_faults_roll_independently_of_each_other() -> None:
    rand = random.Random(11)
    faults = [
        Fault(id="a", abort_status=500, abort_percent=50),
        Fault(id="b", abort_reset=True, abort_percent=20),
    ]
    by_status = by_reset = 0
    for _ in range(N):
        d = decide(faults, GET, rand, now=0.0)
        by_status += d.abort_status == 500
        by_reset += d.abort_reset
    # the first abort wins: b resets only when a did not fire: 50 % of 20 % = 10 %
    assert abs(fraction(by_status, N) - 50) <= 1.5
    assert abs(fraction(by_reset, N) - 10) <= 1.5


# -- jitter --------------------------------------------------------------------------------


def test_jitter_spreads_the_delay_uniformly_within_its_bounds() -> None:
    rand = random.Random(5)
    fault = Fault(id="j", delay=0.2, jitter=0.05)
    delays = [decide([fault], GET, rand, now=0.0).delay for _ in range(N)]
    assert min(delays) >= 0.15
    assert max(delays) <= 0.25
    assert min(delays) < 0.151
    assert max(delays) > 0.249
    assert abs(sum(delays) / N - 0.2) <= 0.002  # sd of the mean about 0.0003 s
    lower_half = sum(d < 0.2 for d in delays)
    assert abs(fraction(lower_half, N) - 50) <= 1.5


def test_jitter_never_takes_the_delay_below_zero() -> None:
    rand = random.Random(6)
    fault = Fault(id="j", delay=0.01, jitter=0.05)
    delays = [decide([fault], GET, rand, now=0.0).delay for _ in range(N)]
    assert min(delays) == 0.0
    assert max(delays) <= 0.06
    # uniform on [-0.04, 0.06]: 40 % of draws fall at or below 0
    assert abs(fraction(sum(d == 0.0 for d in delays), N) - 40) <= 1.5


def test_jitter_draws_after_the_delay_roll_and_maps_0_and_1_to_the_bounds() -> None:
    fault = Fault(id="j", delay=1.0, jitter=0.5, delay_percent=50)
    assert decide([fault], GET, sequence([0.1, 0.0]), now=0.0).delay == 0.5
    assert decide([fault], GET, sequence([0.1, 0.5]), now=0.0).delay == 1.0
    assert math.isclose(decide([fault], GET, sequence([0.1, 0.999]), now=0.0).delay, 1.499)
    assert decide([fault], GET, sequence([0.7]), now=0.0) is NO_FAULT  # no jitter draw


# -- expiry --------------------------------------------------------------------------------


def test_a_fault_applies_until_its_expiry_and_not_from_then_on() -> None:
    fault = Fault(id="boxed", abort_status=503, expires_at=1000.0)
    assert decide([fault], GET, no_dice, now=999.999).abort_status == 503
    assert decide([fault], GET, no_dice, now=1000.0) is NO_FAULT
    assert decide([fault], GET, no_dice, now=5000.0) is NO_FAULT
    assert not fault.expired(999.0)
    assert fault.expired(1000.0)


def test_an_expired_fault_rolls_no_dice_and_others_still_apply() -> None:
    faults = [
        Fault(id="old", abort_status=500, abort_percent=50, expires_at=10.0),
        Fault(id="new", delay=0.3),
    ]
    assert decide(faults, GET, no_dice, now=20.0) == Decision(delay=0.3, fired=("new",))


def test_a_fault_without_expiry_never_expires() -> None:
    fault = Fault(id="f", delay=0.1)
    assert decide([fault], GET, no_dice, now=1e12).fired == ("f",)


# -- several faults ------------------------------------------------------------------------


def test_the_delays_that_fire_add_up() -> None:
    faults = [
        Fault(id="a", delay=0.125),
        Fault(id="b", delay=0.25, delay_percent=50),
        Fault(id="c", delay=0.5),
    ]
    assert decide(faults, GET, sequence([0.9]), now=0.0) == Decision(delay=0.625, fired=("a", "c"))
    assert decide(faults, GET, sequence([0.1]), now=0.0) == Decision(
        delay=0.875, fired=("a", "b", "c")
    )


def test_the_first_abort_that_fires_wins_by_fault_order() -> None:
    faults = [
        Fault(id="a", abort_status=500, abort_percent=50),
        Fault(id="b", abort_reset=True),
        Fault(id="c", abort_status=429),
    ]
    assert decide(faults, GET, sequence([0.1]), now=0.0) == Decision(abort_status=500, fired=("a",))
    assert decide(faults, GET, sequence([0.9]), now=0.0) == Decision(abort_reset=True, fired=("b",))


def test_every_matching_fault_rolls_even_after_an_abort_won() -> None:
    faults = [
        Fault(id="a", abort_status=500),
        Fault(id="b", abort_status=502, abort_percent=50),
        Fault(id="c", delay=0.2, delay_percent=50),
    ]
    draws: list[float] = []

    def rand() -> float:
        draws.append(0.25)
        return 0.25

    assert decide(faults, GET, rand, now=0.0) == Decision(
        delay=0.2, abort_status=500, fired=("a", "c")
    )
    assert len(draws) == 2


def test_delay_comes_with_an_abort_of_another_fault() -> None:
    faults = [Fault(id="slow", delay=0.3), Fault(id="fail", abort_status=503)]
    assert decide(faults, GET, no_dice, now=0.0) == Decision(
        delay=0.3, abort_status=503, fired=("slow", "fail")
    )


def test_the_longest_hang_and_the_smallest_bandwidth_are_in_force() -> None:
    hangs = [Fault(id="h1", hang=2.0), Fault(id="h2", hang=5.0), Fault(id="h3", hang=5.0)]
    assert decide(hangs, GET, no_dice, now=0.0) == Decision(hang=5.0, fired=("h2",))
    limits = [Fault(id="b1", bandwidth=5000), Fault(id="b2", bandwidth=800)]
    assert decide(limits, GET, no_dice, now=0.0) == Decision(bandwidth=800, fired=("b2",))


def test_an_abort_ends_the_request_before_a_hang_or_a_bandwidth_limit() -> None:
    faults = [
        Fault(id="limit", bandwidth=1000),
        Fault(id="hang", hang=3.0),
        Fault(id="abort", abort_status=503, abort_percent=50),
    ]
    assert decide(faults, GET, sequence([0.1]), now=0.0) == Decision(
        abort_status=503, fired=("abort",)
    )
    # the abort did not fire: the hang ends the request, the limit never applies
    assert decide(faults, GET, sequence([0.9]), now=0.0) == Decision(hang=3.0, fired=("hang",))
    assert decide(faults[:1], GET, no_dice, now=0.0) == Decision(bandwidth=1000, fired=("limit",))


def test_hang_and_abort_in_one_fault_abort_some_and_hang_the_rest() -> None:
    fault = Fault(id="f", abort_status=503, abort_percent=25, hang=1.0)
    assert decide([fault], GET, sequence([0.2]), now=0.0) == Decision(
        abort_status=503, fired=("f",)
    )
    assert decide([fault], GET, sequence([0.3]), now=0.0) == Decision(hang=1.0, fired=("f",))


def test_only_the_matching_faults_combine() -> None:
    faults = [
        Fault(id="items", match=Match(path_prefix="/items"), delay=0.125),
        Fault(id="post", match=Match(method="POST"), abort_status=500),
        Fault(id="web", match=Match(source="frontend"), delay=0.25),
    ]
    assert decide(faults, GET, no_dice, now=0.0) == Decision(delay=0.375, fired=("items", "web"))


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"delay": 0.1, "delay_percent": 120},
            "delay_percent",
            "delay_percent must be a percentage from 0 to 100, got 120",
        ),
        (
            {"abort_status": 503, "abort_percent": -0.5},
            "abort_percent",
            "abort_percent must be a percentage from 0 to 100, got -0.5",
        ),
        (
            {"abort_status": 503, "abort_percent": math.nan},
            "abort_percent",
            "abort_percent must be a percentage from 0 to 100, got nan",
        ),
        ({"delay": -0.1}, "delay", "delay must be a number of seconds, 0 or more, got -0.1"),
        ({"delay": math.inf}, "delay", "delay must be a number of seconds, 0 or more, got inf"),
        ({"delay": "200ms"}, "delay", "delay must be a number of seconds, 0 or more, got '200ms'"),
        (
            {"delay": 0.1, "jitter": -1},
            "jitter",
            "jitter must be a number of seconds, 0 or more, got -1",
        ),
        (
            {"abort_status": 199},
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 199",
        ),
        (
            {"abort_status": 600},
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 600",
        ),
        (
            {"abort_status": 503.0},
            "abort_status",
            "abort_status must be an HTTP status from 200 to 599, got 503.0",
        ),
        (
            {"abort_status": 503, "abort_reset": True},
            "abort_reset",
            "abort_reset cannot be set together with abort_status: an abort either answers "
            "with a status or resets the connection",
        ),
        ({"abort_reset": 1}, "abort_reset", "abort_reset must be true or false, got 1"),
        (
            {},
            "",
            "the fault does nothing: give it a delay, an abort_status, abort_reset, "
            "a bandwidth or a hang",
        ),
        (
            {"delay": 0},
            "",
            "the fault does nothing: give it a delay, an abort_status, abort_reset, "
            "a bandwidth or a hang",
        ),
        (
            {"bandwidth": 0},
            "bandwidth",
            "bandwidth must be a whole number of bytes per second above 0, got 0",
        ),
        (
            {"bandwidth": -100},
            "bandwidth",
            "bandwidth must be a whole number of bytes per second above 0, got -100",
        ),
        ({"hang": 0}, "hang", "hang must be a number of seconds above 0, got 0"),
        ({"hang": -2.5}, "hang", "hang must be a number of seconds above 0, got -2.5"),
        (
            {"jitter": 0.05, "abort_status": 500},
            "jitter",
            "jitter is set but the fault has no delay; give it a delay too",
        ),
        (
            {"delay_percent": 20, "abort_status": 500},
            "delay_percent",
            "delay_percent is set but the fault has no delay",
        ),
        (
            {"abort_percent": 20, "delay": 0.1},
            "abort_percent",
            "abort_percent is set but the fault has no abort",
        ),
        (
            {"delay": 0.1, "expires_at": math.inf},
            "expires_at",
            "expires_at must be a time in seconds, got inf",
        ),
        (
            {"id": "", "delay": 0.1},
            "id",
            "id must be a fault id (non-empty, no spaces or ':'), got ''",
        ),
    ],
)
def test_an_invalid_fault_is_refused_with_one_sentence_naming_the_field(
    kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(FaultError) as caught:
        Fault(**{"id": "f", **kwargs})
    assert str(caught.value) == message
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path_prefix": "items"}, "path_prefix must start with '/', got 'items'"),
        ({"path_prefix": ""}, "path_prefix must start with '/', got ''"),
        (
            {"method": "GE T"},
            "method must be an HTTP method (non-empty, no spaces or ':'), got 'GE T'",
        ),
        (
            {"headers": (("x-env", "dev"), ("X-Env", "prod"))},
            "headers names 'X-Env' twice; give each header once",
        ),
        (
            {"headers": (("", "dev"),)},
            "headers must be a header name (non-empty, no spaces or ':'), got ''",
        ),
        ({"source": ""}, "source must be a service name (non-empty, no spaces or ':'), got ''"),
    ],
)
def test_an_invalid_match_is_refused_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultError) as caught:
        Match(**kwargs)
    assert str(caught.value) == message


def test_the_field_checks_serve_the_cli_under_its_own_flag_names() -> None:
    assert check_percent(20, "--percent") == 20.0
    assert check_seconds(0, "--delay") == 0.0
    assert check_status(503, "--abort") == 503
    assert check_path_prefix("/x", "--path") == "/x"
    assert check_bandwidth(1, "--bandwidth") == 1
    assert check_hang(0.5, "--hang") == 0.5
    for check, value, message in [
        (check_percent, 120, "--percent must be a percentage from 0 to 100, got 120"),
        (check_percent, True, "--percent must be a percentage from 0 to 100, got True"),
        (check_seconds, -1, "--delay must be a number of seconds, 0 or more, got -1"),
        (check_status, 700, "--abort must be an HTTP status from 200 to 599, got 700"),
        (check_path_prefix, "x", "--path must start with '/', got 'x'"),
        (
            check_bandwidth,
            0,
            "--bandwidth must be a whole number of bytes per second above 0, got 0",
        ),
        (check_hang, 0, "--hang must be a number of seconds above 0, got 0"),
    ]:
        flag = message.split()[0]
        with pytest.raises(FaultError) as caught:
            check(value, flag)
        assert str(caught.value) == message
        assert caught.value.field == flag


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": 0.0, "jitter": 0.01},
        {"delay": 0.1, "delay_percent": 0},
        {"abort_status": 200},
        {"abort_status": 599},
        {"abort_reset": True, "abort_percent": 100},
        {"bandwidth": 1},
        {"hang": 0.001},
        {"delay": 1, "abort_status": 503, "bandwidth": 10, "hang": 1, "expires_at": 0},
    ],
)
def test_valid_edges_are_accepted(kwargs: dict[str, Any]) -> None:
    Fault(id="ok", **kwargs)


# -- wire form -----------------------------------------------------------------------------

CANONICAL: list[dict[str, Any]] = [
    {"id": "slow", "delay": 0.2},
    {"id": "flaky", "delay": 0.2, "jitter": 0.05, "delay_percent": 20.5},
    {"id": "fail", "abort_status": 503, "abort_percent": 10},
    {"id": "cut", "match": {"path_prefix": "/items"}, "abort_reset": True, "abort_percent": 0.1},
    {
        "id": "all",
        "match": {
            "path_prefix": "/a",
            "method": "post",
            "headers": {"X-Env": "dev", "x-user": "ann"},
            "source": "frontend",
        },
        "delay": 1,
        "jitter": 0.5,
        "delay_percent": 50,
        "abort_status": 500,
        "abort_percent": 33.3,
        "bandwidth": 10_000,
        "hang": 2.5,
        "expires_at": 1_700_000_000.25,
    },
    {"id": "toxic", "bandwidth": 1024, "hang": 30},
]


@pytest.mark.parametrize("wire", CANONICAL, ids=lambda w: w["id"])
def test_the_canonical_wire_form_round_trips_exactly(wire: dict[str, Any]) -> None:
    through_json = json.loads(json.dumps(wire))
    fault = parse_fault(through_json)
    assert fault_to_wire(fault) == wire
    assert json.dumps(fault_to_wire(fault)) == json.dumps(wire)
    assert parse_fault(json.loads(json.dumps(fault_to_wire(fault)))) == fault


def test_faults_round_trip_through_json() -> None:
    faults = (
        Fault(id="a", delay=0.25, jitter=0.1, delay_percent=12.5),
        Fault(
            id="b",
            match=Match(path_prefix="/x", method="GET", headers=(("k", "v"),), source="web"),
            abort_status=502,
            abort_percent=99.9,
            expires_at=123.5,
        ),
        Fault(id="c", abort_reset=True, bandwidth=5, hang=0.5),
    )
    wire = json.loads(json.dumps(faults_to_wire(faults)))
    assert parse_faults(wire) == faults


def test_defaults_are_left_out_of_the_wire_form() -> None:
    assert fault_to_wire(Fault(id="f", delay=0.1)) == {"id": "f", "delay": 0.1}
    assert parse_fault({"id": "f", "delay": 0.1, "jitter": 0, "match": {}}) == Fault(
        id="f", delay=0.1
    )


WHERE = "snapshot.routes.catalog.faults"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"abort_percent": 120},
            f"{WHERE}[1].abort_percent must be a percentage from 0 to 100, got 120",
        ),
        (
            {"abort_status": "503"},
            f"{WHERE}[1].abort_status must be an HTTP status from 200 to 599, got '503'",
        ),
        ({"toxicity": 0.5}, f"{WHERE}[1].toxicity is not a fault field"),
        ({"id": None}, f"{WHERE}[1].id must be a fault id (non-empty, no spaces or ':'), got None"),
        ({"abort_status": None}, f"{WHERE}[1].abort_percent is set but the fault has no abort"),
        ({"match": []}, f"{WHERE}[1].match must be an object"),
        ({"match": {"path": "/x"}}, f"{WHERE}[1].match.path is not a match field"),
        (
            {"match": {"path_prefix": "x"}},
            f"{WHERE}[1].match.path_prefix must start with '/', got 'x'",
        ),
        (
            {"match": {"headers": {"x-env": 1}}},
            f"{WHERE}[1].match.headers.x-env must be a string, got 1",
        ),
        (
            {"match": {"method": 7}},
            f"{WHERE}[1].match.method must be an HTTP method (non-empty, no spaces or ':'), got 7",
        ),
        (
            {"abort_reset": True},
            f"{WHERE}[1].abort_reset cannot be set together with "
            "abort_status: an abort either answers with a status or resets the connection",
        ),
        ({"id": "slow"}, f"{WHERE}[1].id 'slow' is taken by {WHERE}[0]"),
    ],
)
def test_a_bad_wire_fault_is_refused_naming_its_path(change: dict[str, Any], message: str) -> None:
    wire = copy.deepcopy(CANONICAL[:3])
    wire[1] = {"id": "fail", "abort_status": 503, "abort_percent": 10, **change}
    with pytest.raises(FaultError) as caught:
        parse_faults(wire, WHERE)
    assert str(caught.value) == message


def test_a_wire_fault_without_an_id_or_that_does_nothing_is_refused_naming_its_path() -> None:
    with pytest.raises(FaultError, match=r"^faults\[0\]\.id is missing; every fault needs an id$"):
        parse_faults([{"delay": 1}])
    with pytest.raises(FaultError, match=r"^faults\[0\] does nothing: give it a delay"):
        parse_faults([{"id": "x"}])
    with pytest.raises(FaultError, match=r"^faults must be a list$"):
        parse_faults({"id": "x"})
    with pytest.raises(FaultError, match=r"^fault must be an object$"):
        parse_fault("slow")


# -- delay and hang ------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it.

    ``overshoot`` makes every sleep last that much longer (0.1: 10 %), as a busy
    event loop would.
    """

    def __init__(self, overshoot: float = 0.0, pause: tuple[int, float] = (0, 0.0)) -> None:
        self.now = 0.0
        self.overshoot = overshoot
        self.pause_every, self.pause = pause
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds * (1 + self.overshoot)
        if self.pause_every and len(self.sleeps) % self.pause_every == 0:
            self.now += self.pause


async def test_delay_sleeps_for_the_delay_and_not_at_all_for_zero() -> None:
    clock = FakeClock()
    await delay(0.0, sleep=clock.sleep)
    assert clock.sleeps == []
    await delay(0.25, sleep=clock.sleep)
    assert clock.sleeps == [0.25]


async def test_hang_holds_for_its_duration_then_resets() -> None:
    clock = FakeClock()
    resets: list[float] = []
    await hang(5.0, lambda: resets.append(clock.now), sleep=clock.sleep)
    assert clock.sleeps == [5.0]
    assert resets == [5.0]


async def test_a_hang_cut_short_by_the_peer_never_resets() -> None:
    waiting = asyncio.Event()
    resets: list[str] = []

    async def forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang(30.0, lambda: resets.append("reset"), sleep=forever))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resets == []


# -- the throttle --------------------------------------------------------------------------


class Sink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int]] = []
        self.data = bytearray()

    async def send(self, piece: bytes) -> None:
        self.sent.append((self.clock.now, len(piece)))
        self.data += piece

    def bytes_within(self, start: float, end: float) -> int:
        return sum(n for t, n in self.sent if start <= t < end)


def body(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def test_10_kb_per_second_over_50_kb_takes_5_seconds_within_2_percent() -> None:
    clock = FakeClock()
    sink = Sink(clock)
    throttle = Throttle(10_000, clock=clock, sleep=clock.sleep)
    data = body(50_000)
    await throttle.write(data, sink.send)
    assert bytes(sink.data) == data
    first, last = sink.sent[0][0], sink.sent[-1][0]
    assert abs((last - first) - 5.0) <= 0.1
    assert max(n for _, n in sink.sent) == throttle.piece == 200


def within_rate(sink: Sink, rate: int, piece: int, window: float = 1.0) -> None:
    """Every window of the stream carries rate·window bytes, give or take 2 pieces."""
    end = sink.sent[-1][0]
    for start, _ in sink.sent:
        if start + window > end:
            break
        carried = sink.bytes_within(start, start + window)
        assert abs(carried - rate * window) <= 2 * piece, (start, carried)


async def test_the_rate_holds_in_every_window_across_uneven_chunks() -> None:
    clock = FakeClock()
    sink = Sink(clock)
    throttle = Throttle(8_000, clock=clock, sleep=clock.sleep)
    chunks = [body(1), body(7_000), body(65_536), body(3), body(160), body(12_345)]
    for chunk in chunks:
        await throttle.write(chunk, sink.send)
    total = sum(map(len, chunks))
    assert bytes(sink.data) == b"".join(chunks)
    within_rate(sink, 8_000, throttle.piece)
    assert abs(sink.sent[-1][0] - total / 8_000) <= 1 / Throttle.PIECES_PER_SECOND


@pytest.mark.parametrize("overshoot", [0.1, 0.5])
async def test_a_late_event_loop_does_not_slow_the_rate_down(overshoot: float) -> None:
    clock = FakeClock(overshoot=overshoot)
    sink = Sink(clock)
    throttle = Throttle(10_000, clock=clock, sleep=clock.sleep)
    await throttle.write(body(50_000), sink.send)
    assert abs(sink.sent[-1][0] - 5.0) <= 0.1
    within_rate(sink, 10_000, throttle.piece)


async def test_a_wake_up_later_than_one_piece_is_made_up() -> None:
    """Every 10th sleep wakes 30 ms late (1.5 pieces): 25 such pauses over 5 s would
    cost 0.25 s without the one piece of credit; with it, nothing."""
    clock = FakeClock(pause=(10, 0.03))
    sink = Sink(clock)
    throttle = Throttle(10_000, clock=clock, sleep=clock.sleep)
    await throttle.write(body(50_000), sink.send)
    assert abs(sink.sent[-1][0] - 4.98) <= 0.02


async def test_an_idle_sender_earns_no_burst() -> None:
    clock = FakeClock()
    sink = Sink(clock)
    throttle = Throttle(10_000, clock=clock, sleep=clock.sleep)
    await throttle.write(body(10_000), sink.send)
    clock.now += 60.0  # upstream was silent for a minute
    resumed = clock.now
    await throttle.write(body(10_000), sink.send)
    assert sink.bytes_within(resumed, resumed + 1e-9) <= 2 * throttle.piece
    assert abs(sink.sent[-1][0] - resumed - 1.0) <= 2 / Throttle.PIECES_PER_SECOND


async def test_a_sender_slower_than_the_limit_is_never_held_back() -> None:
    clock = FakeClock()
    sink = Sink(clock)
    throttle = Throttle(10_000, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        await throttle.write(body(100), sink.send)
        clock.now += 0.05  # 2,000 bytes/s arriving
    assert clock.sleeps == []
    assert len(sink.sent) == 20


async def test_a_tiny_rate_sends_byte_by_byte() -> None:
    clock = FakeClock()
    sink = Sink(clock)
    throttle = Throttle(10, clock=clock, sleep=clock.sleep)
    await throttle.write(b"0123456789" * 2, sink.send)
    assert throttle.piece == 1
    assert [t for t, _ in sink.sent] == pytest.approx([i / 10 for i in range(20)])


def test_a_throttle_needs_a_positive_rate() -> None:
    with pytest.raises(FaultError, match=r"^bandwidth must be a whole number"):
        Throttle(0)
