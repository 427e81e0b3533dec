"""devmesh.forms.splits: the weights `devmesh split` reads from its arguments, and the whole
percentages the TUI's split editor moves."""

from __future__ import annotations

import pytest

from devmesh.errors import UsageError
from devmesh.forms.splits import even_split, parse_weights, rebalance, whole_split


def test_weights_are_read_as_numbers() -> None:
    assert parse_weights(["v1=90", "v2=10.5"]) == {"v1": 90.0, "v2": 10.5}


@pytest.mark.parametrize("item", ["v1=nan", "v1=inf", "v1=-Infinity", "v1=1e400", "v1=", "v1"])
def test_a_weight_that_is_no_number_is_refused_before_it_is_sent(item: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_weights([item, "v2=100"])
    assert caught.value.message == f"{item!r} is not VERSION=WEIGHT"


@pytest.mark.parametrize(
    ("weights", "version", "step", "expected"),
    [
        ({"v1": 50, "v2": 50}, "v1", 5, {"v1": 55, "v2": 45}),
        ({"v1": 50, "v2": 50}, "v1", -5, {"v1": 45, "v2": 55}),
        ({"v1": 100, "v2": 0}, "v1", 5, {"v1": 100, "v2": 0}),
        ({"v1": 0, "v2": 100}, "v1", -5, {"v1": 0, "v2": 100}),
        ({"v1": 90, "v2": 5, "v3": 5}, "v1", 10, {"v1": 100, "v2": 0, "v3": 0}),
        ({"v1": 34, "v2": 33, "v3": 33}, "v2", 5, {"v1": 34, "v2": 38, "v3": 28}),
        ({"v1": 3, "v2": 97}, "v1", -5, {"v1": 0, "v2": 100}),
    ],
)
def test_rebalancing_keeps_the_sum_at_100_and_no_weight_below_0(
    weights: dict[str, int], version: str, step: int, expected: dict[str, int]
) -> None:
    moved = rebalance(weights, version, step)
    assert moved == expected
    assert sum(moved.values()) == 100
    assert min(moved.values()) >= 0


def test_an_even_split_sums_to_100() -> None:
    assert even_split(["v1", "v2", "v3"]) == {"v1": 34, "v2": 33, "v3": 33}
    assert even_split([]) == {}


def test_the_editor_starts_from_the_split_in_force_or_an_even_one() -> None:
    assert whole_split(["v1", "v2"], {"v1": 90.4, "v2": 9.6}) == {"v1": 90, "v2": 10}
    assert whole_split(["v1", "v2"], None) == {"v1": 50, "v2": 50}
    assert whole_split(["v1", "v2", "v3"], {"v1": 33.4, "v2": 33.3, "v3": 33.3}) == {
        "v1": 34,
        "v2": 33,
        "v3": 33,
    }, "a split that does not round to 100 starts even"
