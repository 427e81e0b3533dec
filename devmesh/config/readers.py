"""Typed reads from one mapping of a config, reporting every wrong value as a Problem.

A ``Section`` wraps one mapping (the project, a service, a policy...) with its
dotted path and a phrase naming it in messages ("service catalog"). Each read
returns the typed value, or ``None`` when the key is absent or its value is
wrong; in the latter case a Problem has been added, so callers never report
the same mistake twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from devmesh.config.report import Problems, did_you_mean
from devmesh.units import finite_number, parse_duration

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def describe(value: object) -> str:
    """A value as a user would recognise it in a message."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else f"{'-' if value < 0 else ''}infinity"
    if isinstance(value, int) and finite_number(value) is None:  # beyond any float
        return f"a {len(str(abs(value)))}-digit number"
    return str(value)


def is_number(value: object) -> bool:
    """A finite number, not a boolean (see ``units.finite_number``)."""
    return finite_number(value) is not None


def _range_text(low: float, high: float | None) -> str:
    return f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"


@dataclass
class Section:
    """One mapping of the config being read."""

    problems: Problems
    path: str
    owner: str
    """How messages name this mapping: "service catalog", "the policy for catalog"."""
    data: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        problems: Problems,
        value: object,
        path: str,
        owner: str,
        *,
        allowed: Collection[str] | None,
        example: str,
        misplaced: Mapping[str, str] | None = None,
    ) -> Section | None:
        """A section over ``value``, or ``None`` (reported) if it is not a mapping.

        ``None`` (an empty YAML value) reads as an empty mapping. With ``allowed``,
        every other key is reported as unknown; ``misplaced`` gives a better hint
        for keys that belong somewhere else.
        """
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.add(
                path,
                f"{owner} must be a mapping, not {describe(value)}",
                f"write its settings on indented lines below it, e.g. `{example}`",
            )
            return None
        for key in value:
            if not isinstance(key, str):  # only from Python callers: YAML reading checks keys
                problems.add(path, f"the key {key!r} in {owner} is not a string", f"write '{key}'")
        value = {key: item for key, item in value.items() if isinstance(key, str)}
        section = cls(problems, path, owner, value)
        if allowed is not None:
            section.check_keys(allowed, misplaced)
        return section

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The raw value of ``key``; ``None`` when absent or empty."""
        return self.data.get(key)

    def check_keys(
        self,
        allowed: Collection[str],
        misplaced: Mapping[str, str] | None = None,
        *,
        ignored_prefix: str | None = None,
    ) -> None:
        """Report every key not in ``allowed``, suggesting the one it is a typo of."""
        for key in self.data:
            if key in allowed or (ignored_prefix is not None and key.startswith(ignored_prefix)):
                continue
            otherwise = f"the keys {self.owner} accepts are: {', '.join(sorted(allowed))}"
            hint = (misplaced or {}).get(key) or did_you_mean(key, allowed, otherwise)
            self.problems.add(self.at(key), f"unknown key '{key}' in {self.owner}", hint)

    def wrong(self, key: str, message: str, hint: str) -> None:
        self.problems.add(self.at(key), message, hint)

    def missing(self, key: str, example: str) -> None:
        self.problems.add(self.at(key), f"{self.owner} has no {key}", f"add `{example}`")

    def mapping(
        self,
        key: str,
        owner: str,
        *,
        allowed: Collection[str] | None,
        example: str,
        misplaced: Mapping[str, str] | None = None,
    ) -> Section | None:
        """The nested mapping at ``key``; ``None`` when absent or wrong."""
        value = self.get(key)
        if value is None:
            return None
        return Section.open(
            self.problems,
            value,
            self.at(key),
            owner,
            allowed=allowed,
            example=example,
            misplaced=misplaced,
        )

    def string(self, key: str, *, example: str, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                self.missing(key, example)
            return None
        if not isinstance(value, str):
            self._type(key, "a string", value, f"write it like `{example}`")
            return None
        if not value.strip():
            self.wrong(key, f"{key} of {self.owner} is empty", f"write it like `{example}`")
            return None
        return value

    def choice(self, key: str, choices: tuple[str, ...], *, example: str) -> str | None:
        """A string that must be one of ``choices`` (``None`` if absent or wrong)."""
        value = self.string(key, example=example)
        if value is None or value in choices:
            return value
        self.wrong(
            key,
            f"{key} of {self.owner} must be one of {', '.join(choices)}, not '{value}'",
            did_you_mean(value, choices, f"write e.g. `{example}`"),
        )
        return None

    def integer(self, key: str, low: int, high: int | None, *, example: str) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        example = self.problems.origin.wording.examples.get(key, example)
        if not isinstance(value, int) or isinstance(value, bool):
            hint = f"write a whole number without quotes, e.g. `{example}`"
            self._type(key, "a whole number", value, hint)
            return None
        if value < low or (high is not None and value > high):
            self._out_of_range(key, value, low, high, example)
            return None
        return value

    def number(self, key: str, low: float, high: float, *, example: str) -> float | None:
        value = self.get(key)
        if value is None:
            return None
        return self.check_number(self.at(key), f"{key} of {self.owner}", value, low, high, example)

    def check_number(
        self, path: str, what: str, value: object, low: float, high: float, example: str
    ) -> float | None:
        """``value`` as a float within ``low..high``, else report it at ``path``."""
        number = finite_number(value)
        if number is None:
            self.problems.add(
                path,
                f"{what} must be a number, not {describe(value)}",
                f"write a number without quotes, e.g. `{example}`",
            )
            return None
        if not low <= number <= high:
            self.problems.add(
                path,
                f"{what} must be {_range_text(low, high)}, not {value}",
                f"use a number {_range_text(low, high)}, e.g. `{example}`",
            )
            return None
        return number

    def duration(self, key: str, *, example: str) -> float | None:
        """A duration of more than 0 seconds, from ``"250ms"``, ``"2s"``, ``"1m"`` or a number."""
        value = self.get(key)
        if value is None:
            return None
        hint = f"write it like 250ms, 2s or 1m, e.g. `{example}`"
        try:
            seconds = parse_duration(value)
        except ValueError:
            if is_number(value):  # a negative number of seconds
                self.wrong(key, f"{key} of {self.owner} must be more than 0, not {value}", hint)
            else:
                self._type(key, "a duration", value, hint)
            return None
        if seconds <= 0:
            self.wrong(key, f"{key} of {self.owner} must be more than 0, not {value}", hint)
            return None
        return seconds

    def strings(self, key: str, *, example: str) -> list[str] | None:
        """A list of non-empty strings; ``None`` if absent or if any item is wrong."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self._type(key, "a list", value, f"write it like `{example}`")
            return None
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                ok = False
                self.problems.add(
                    f"{self.at(key)}[{index}]",
                    f"item {index + 1} of {key} of {self.owner} must be a name, not "
                    f"{describe(item)}",
                    f"write it like `{example}`",
                )
        return [str(item) for item in value] if ok else None

    def text_map(self, key: str, *, names: re.Pattern[str] | None, example: str) -> dict[str, str]:
        """A mapping of names to scalars, as strings (``true`` -> ``"true"``); ``{}`` if wrong."""
        section = self.mapping(key, f"{key} of {self.owner}", allowed=None, example=example)
        if section is None:
            return {}
        result: dict[str, str] = {}
        for name, value in section.data.items():
            if names is not None and not names.match(name):
                section.wrong(
                    name,
                    f"'{name}' in {key} of {self.owner} is not a valid variable name",
                    "use letters, digits and '_', not starting with a digit, e.g. `LOG_LEVEL`",
                )
            elif isinstance(value, bool):
                result[name] = str(value).lower()
            elif isinstance(value, float) and not is_number(value):
                section.wrong(
                    name,
                    f"{name} in {key} of {self.owner} is {describe(value)}, which is not a number",
                    f"write a number, or quote the value to pass it as text: `{name}: '...'`",
                )
            elif isinstance(value, str | int | float):
                result[name] = str(value)
            else:
                section.wrong(
                    name,
                    f"{name} in {key} of {self.owner} must be a string, number or boolean, "
                    f"not {describe(value)}",
                    "write one value on the line, quoted if needed, e.g. "
                    f"`{name}: 'text'` (use '' for an empty value)",
                )
        return result

    def _type(self, key: str, expected: str, value: object, hint: str) -> None:
        self.wrong(key, f"{key} of {self.owner} must be {expected}, not {describe(value)}", hint)

    def _out_of_range(self, key: str, value: int, low: int, high: int | None, example: str) -> None:
        self.wrong(
            key,
            f"{key} of {self.owner} must be {_range_text(low, high)}, not {value}",
            f"use a whole number {_range_text(low, high)}, e.g. `{example}`",
        )
