"""devmesh.units: durations as users type them, and printed back so they read the same."""

from __future__ import annotations

import math
import random

import pytest

from devmesh.units import (
    finite_number,
    format_duration,
    format_size,
    human_duration,
    parse_duration,
    parse_size,
)

NOT_NUMBERS = [math.nan, math.inf, -math.inf, 10**400, -(10**400), True, False, None]
"""Values where a number is asked that mean none: NaN, the infinities (JSON's NaN and
Infinity, YAML's .nan and .inf, and 1e400 as Python reads it), an integer no float holds,
and booleans (true is not 1)."""


@pytest.mark.parametrize(("value", "number"), [(1, 1.0), (-2.5, -2.5), (0, 0.0), (1e308, 1e308)])
def test_finite_number_takes_ints_and_floats(value: object, number: float) -> None:
    assert finite_number(value) == number


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "1"])
def test_finite_number_refuses_what_is_no_number(value: object) -> None:
    assert finite_number(value) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("0ms", 0.0),
        ("2s", 2.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0.5h", 1800.0),
        ("10", 10.0),
        ("0.25", 0.25),
        (" 3 s ", 3.0),
        ("7 ms", 0.007),
        (5, 5.0),
        (0, 0.0),
        (1.25, 1.25),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    "value",
    ["", "ms", "fast", "2 seconds", "1d", "-1s", "1e3s", "1,5s", ".5s", "1.s", "2sms", "1 h m"],
)
def test_parse_duration_rejects_text_that_is_not_a_duration(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False, None, [1], {"s": 1}])
def test_parse_duration_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_parse_duration_rejects_numbers_that_are_none(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration; write it like 250ms"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["9" * 400, "9" * 400 + "h", f"{'9' * 306}h"])
def test_parse_duration_rejects_text_too_long_for_a_float(value: str) -> None:
    with pytest.raises(ValueError, match="is too long to be a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_rejects_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (0.0, "0ms"), (1.0, "1s"), (90.0, "90s"), (120.0, "2m"), (3600.0, "1h")],
)
def test_format_duration_picks_a_short_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def round_trip_values() -> list[float]:
    """Durations users and the code produce: milliseconds, eighths of a second, whole units."""
    values = [0.0, 0.001, 0.25, 0.5, 1.0, 1.5, 59.0, 60.0, 90.0, 3599.0, 3600.0, 5400.0]
    values += [86400.0, 1234567.0, 1234567.125, 987654321.5, 7 * 86400.0 + 0.125]
    rng = random.Random(2024)
    values += [rng.randrange(0, 10**7) / 1000 for _ in range(300)]  # whole milliseconds
    values += [rng.randrange(0, 10**8) / 8 for _ in range(300)]  # up to ~12.5e6 s
    values += [float(rng.randrange(0, 10**9)) for _ in range(100)]
    return values


def test_format_duration_reads_back_as_the_same_value() -> None:
    failures = []
    for seconds in round_trip_values():
        text = format_duration(seconds)
        try:
            back = parse_duration(text)
        except ValueError as exc:
            failures.append(f"{seconds!r} -> {text!r}: rejected ({exc})")
            continue
        if not math.isclose(back, seconds, rel_tol=1e-12, abs_tol=1e-12):
            failures.append(f"{seconds!r} -> {text!r} -> {back!r}")
    assert not failures, "format_duration does not read back:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("512B", 512),
        ("64kB", 64_000),
        ("1.5MB", 1_500_000),
        ("2KiB", 2048),
        (100, 100),
    ],
)
def test_sizes_are_read_in_bytes_and_written_back(text: object, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["fast", "-1", "1 TB", True, "kB", *NOT_NUMBERS, "9" * 400])
def test_a_size_that_is_not_one_says_how_to_write_it(text: object) -> None:
    with pytest.raises(ValueError, match="write it like 512B, 64kB or 1MB"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.4, "0s"),
        (0.9, "0s"),
        (12.0, "12s"),
        (59.4, "59s"),
        (59.9, "59s"),
        (60.0, "1m"),
        (185.0, "3m 05s"),
        (300.0, "5m"),
        (3599.0, "59m 59s"),
        (3600.0, "1h"),
        (3660.0, "1h 01m"),
        (86399.6, "23h 59m"),
        (86400.0, "1d"),
        (2 * 86400.0 + 4 * 3600.0 + 59.0, "2d 04h"),
        (-12.0, "-12s"),
        (-0.2, "0s"),
    ],
)
def test_human_duration_shows_the_two_largest_units_the_second_cut(
    seconds: float, text: str
) -> None:
    assert human_duration(seconds) == text
