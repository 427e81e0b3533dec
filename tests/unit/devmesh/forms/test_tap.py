"""devmesh.forms.tap: `devmesh tap`'s flags and the TUI tap's one-line filter, read by one
piece of code."""

from __future__ import annotations

import pytest

from devmesh.errors import UsageError
from devmesh.forms.tap import filters_from_words, tap_filters


def test_the_flags_and_the_line_give_the_same_filters() -> None:
    line = filters_from_words("catalog 5XX /items >100ms")
    flags = tap_filters(service="catalog", status="5xx", path="/items", min_latency="100ms")
    assert (
        line
        == flags
        == {
            "service": "catalog",
            "status": "5xx",
            "path": "/items",
            "min_latency_ms": 100.0,
        }
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"status": "6xx"}, "--status 6xx is not a status or a class"),
        ({"min_latency": "banana"}, "--min-latency banana is not a duration"),
        ({"path": "items"}, "--path items does not start with /"),
        ({"rate": 0.0}, "--rate 0 must be a number above 0"),
    ],
)
def test_a_bad_flag_is_named(given: dict[str, str | float], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        tap_filters(**given)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_a_bad_word_is_named_as_the_line_writes_it() -> None:
    with pytest.raises(UsageError) as caught:
        filters_from_words(">soon")
    assert caught.value.message == "the latency after > soon is not a duration"
    assert caught.value.hint == "e.g. >100ms or >1.5s"
    with pytest.raises(UsageError) as caught:
        filters_from_words("catalog >250")
    assert caught.value.message == "'>250' has no unit: after > comes a latency with its unit"
    assert filters_from_words(">1.5S") == {"min_latency_ms": 1500.0}, "units in any case"
    with pytest.raises(UsageError, match="is not a service, a status"):
        filters_from_words("cat@log")
