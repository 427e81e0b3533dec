"""Parsing and printing the units users type: durations such as ``200ms`` or ``2m``, and
sizes such as ``64kB``; and what counts as a number at all."""

from __future__ import annotations

import itertools
import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def finite_number(value: object) -> float | None:
    """``value`` as a float if it is a number one can mean, else ``None``.

    Not a boolean (``true`` is not 1), not NaN, not an infinity, and not an integer
    too large for a float: every number devmesh takes from a user goes through here.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"2s"``, ``"1.5m"``, ``"1h"`` or a bare number of seconds.

    Raises ``ValueError`` with a sentence fit to show a user.
    """
    if isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _SCALE[match.group(2) or "s"]
    else:
        number = finite_number(value)
        if number is None:
            raise ValueError(f"{value!r} is not a duration; write it like 250ms, 2s or 1m")
        seconds = number
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is too long to be a duration; write it like 250ms, 2s or 1m")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration must be 0 or more")
    return seconds


def format_duration(seconds: float) -> str:
    """A short form that ``parse_duration`` reads back: ``250ms``, ``2s``, ``1.5m``."""
    if seconds < 1:
        return f"{_number(seconds * 1000)}ms"
    if seconds < 60 or seconds % 60:
        return f"{_number(seconds)}s"
    if seconds < 3600 or seconds % 3600:
        return f"{_number(seconds / 60)}m"
    return f"{_number(seconds / 3600)}h"


def _number(value: float) -> str:
    """Plain decimal notation (never ``1e+06``), without trailing zeros."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_SCALE = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_size(value: object) -> int:
    """Bytes from ``"64kB"``, ``"1.5MB"``, ``"512KiB"`` or a bare number of bytes.

    Raises ``ValueError`` with a sentence fit to show a user.
    """
    hint = "write it like 512B, 64kB or 1MB"
    if isinstance(value, str) and (match := _SIZE.match(value)):
        size = float(match.group(1)) * _SIZE_SCALE[match.group(2) or "B"]
    else:
        number = finite_number(value)
        if number is None:
            raise ValueError(f"{value!r} is not a size; {hint}")
        size = number
    if not math.isfinite(size):
        raise ValueError(f"{value!r} is too large to be a size; {hint}")
    if size < 0:
        raise ValueError(f"{value!r} is negative; a size must be 0 or more")
    return round(size)


def format_size(size: int) -> str:
    """A short form that ``parse_size`` reads back: ``512B``, ``64kB``, ``1.5MB``."""
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= scale and (size * 1000) % scale == 0:
            return f"{_number(size / scale)}{unit}"
    return f"{size}B"


_HUMAN_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
"""The units ``human_duration`` writes, each with its seconds, largest first."""


def human_duration(seconds: float) -> str:
    """A duration as people read it in a table: ``12s``, ``3m 05s``, ``23h 59m``, ``2d 04h``.

    Its two largest units, the smaller ones cut rather than rounded, as a countdown reads
    (86399.6 s is ``23h 59m``, not ``1d``); the second left out when it is 0 (``5m``,
    ``1h``); under a second is ``0s``; a duration gone by is ``-12s``. ``--json`` keeps the
    seconds.
    """
    left = math.floor(abs(seconds))
    sign = "-" if seconds < 0 and left else ""
    for (unit, size), (smaller, smaller_size) in itertools.pairwise(_HUMAN_UNITS):
        if left >= size:
            count, rest = divmod(left, size)
            tail = rest // smaller_size
            return f"{sign}{count}{unit}" + (f" {tail:02d}{smaller}" if tail else "")
    return f"{sign}{left}s"
