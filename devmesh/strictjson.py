"""Reading JSON as RFC 8259 has it: no ``NaN``, no ``Infinity``, no number a float cannot hold.

Python's ``json.loads`` takes ``NaN``, ``Infinity`` and ``-Infinity`` (which are
not JSON) and reads ``1e400`` as infinity, so a number that means nothing would
slip into the state and out again as text no other reader takes. ``loads``
refuses such a value, naming where it is (``fault.delay.percent``), so the
sentence shown to a user can say which field to fix.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

_FLOAT_LIMIT = int(sys.float_info.max)
_MAX_DIGITS = len(str(_FLOAT_LIMIT)) + 1
"""An integer written longer than this (sign included) cannot be held by a float."""


class NotJsonNumber(ValueError):
    """A value that is not a finite JSON number; ``str()`` names its path and what it is."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        where = f"`{path}`" if path else "the value"
        if text in ("NaN", "Infinity", "-Infinity"):
            what = "which is not a JSON number"
        else:
            what = "a number beyond what a float holds (about 1.8e308)"
        super().__init__(f"{where} is {_shorten(text)}, {what}")


class _Bad:
    """Where a value that is no finite number was, until ``_first_bad`` finds its path."""

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _Bad:
    number = float(text)
    return number if math.isfinite(number) else _Bad(text)


def _int(text: str) -> int | _Bad:
    if len(text) > _MAX_DIGITS:  # and int() is spared a 4300-digit string it would refuse
        return _Bad(text)
    number = int(text)
    return number if abs(number) <= _FLOAT_LIMIT else _Bad(text)


def loads(text: str | bytes) -> Any:
    """The JSON value in ``text``; ``NotJsonNumber`` for the first value that is no finite
    number, ``json.JSONDecodeError`` (a ``ValueError`` too) for text that is not JSON."""
    value = json.loads(text, parse_constant=_Bad, parse_float=_float, parse_int=_int)
    found = _first_bad(value, "")
    if found is not None:
        raise NotJsonNumber(*found)
    return value


def _first_bad(value: object, path: str) -> tuple[str, str] | None:
    if isinstance(value, _Bad):
        return path, value.text
    if isinstance(value, dict):
        items: Any = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _first_bad(item, where)
        if found is not None:
            return found
    return None


def _shorten(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}…{text[-6:]} ({len(text)} characters)"
