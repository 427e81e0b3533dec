"""How a caller names its fields in a message (``--delay`` or ``delay``), and the values
every form shares: durations, numbers, percentages, comma-separated lists, yes or no."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from devmesh.errors import UsageError
from devmesh.units import format_duration, parse_duration


@dataclass(frozen=True)
class Names:
    """A field's name as the user knows it, and an example of it given ``value``.

    ``Names()`` names flags: ``per_try_timeout`` is ``--per-try-timeout`` and its example
    ``--per-try-timeout 500ms``. ``Names(labels)`` names a form's fields by their labels.
    """

    labels: Mapping[str, str] | None = None
    examples: Mapping[str, str] = field(default_factory=dict)
    """Examples written otherwise than ``<name> <value>`` (e.g. the tap's ``>100ms``)."""

    def name(self, key: str) -> str:
        if self.labels is None:
            return "--" + key.replace("_", "-")
        return self.labels.get(key, key.replace("_", " "))

    def example(self, key: str, value: str) -> str:
        if key in self.examples:
            return f"e.g. {self.examples[key]}"
        return f"e.g. {self.name(key)} {value}"


FLAGS = Names()
"""The CLI's names: its flags."""


def given(value: str | None) -> str | None:
    """``value`` stripped; ``None`` for a field left empty."""
    if value is None:
        return None
    text = value.strip()
    return text or None


def duration(
    value: str | None,
    key: str,
    names: Names = FLAGS,
    *,
    zero: bool = False,
    example: str = "200ms",
) -> str | None:
    """A duration as devmesh.yaml writes it (``200ms``), from what was typed; more than 0
    unless ``zero``."""
    text = given(value)
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{names.name(key)}: {exc}", names.example(key, example)) from None
    if seconds <= 0 and not zero:
        raise UsageError(
            f"{names.name(key)} must be more than 0, not {text}", names.example(key, example)
        )
    return format_duration(seconds)


def seconds(
    value: str | None, key: str, names: Names = FLAGS, *, example: str = "2m"
) -> float | None:
    """A duration above 0 in seconds (e.g. how long a fault lasts)."""
    text = duration(value, key, names, example=example)
    return None if text is None else parse_duration(text)


def whole(value: str | int | None, key: str, names: Names = FLAGS) -> int | None:
    """A whole number, typed (``"3"``) or already one (a flag's ``int``)."""
    if value is None or isinstance(value, int):
        return value
    text = given(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(
            f"{names.name(key)} must be a whole number, not {text!r}", names.example(key, "3")
        ) from None


def number(value: str | float | None, key: str, names: Names = FLAGS) -> float | None:
    """A finite number, typed (``"2.5"``) or already one (a flag's ``float``)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = given(value)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            raise UsageError(
                f"{names.name(key)} must be a number, not {text!r}", names.example(key, "50")
            ) from None
    if not math.isfinite(value):
        raise UsageError(
            f"{names.name(key)} must be a number, not {value}", names.example(key, "50")
        )
    return float(value)


def percentage(
    value: str | float | None, key: str, names: Names = FLAGS, *, example: str = "50"
) -> float | None:
    """A number from 0 to 100."""
    found = number(value, key, names)
    if found is not None and not 0 <= found <= 100:
        raise UsageError(
            f"{names.name(key)} must be from 0 to 100, not {found:g}", names.example(key, example)
        )
    return found


def items(text: str | None) -> list[str]:
    """``"a, b,,c"`` as ``["a", "b", "c"]``: a form's comma-separated list."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def yes_or_no(value: str | None, key: str, names: Names = FLAGS) -> bool:
    """``yes`` or ``no`` (empty: no)."""
    text = (given(value) or "no").lower()
    if text not in ("yes", "no"):
        raise UsageError(
            f"{names.name(key)} must be yes or no, not {text!r}", names.example(key, "yes")
        )
    return text == "yes"
