"""Collecting config problems with their lines, and the suggestions that go in hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devmesh.errors import ConfigError, Problem


def parent_path(path: str) -> str:
    """The enclosing path: ``a.b[0]`` -> ``a.b`` -> ``a`` -> ``""``."""
    if path.endswith("]") and "[" in path:
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def is_under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or inside it."""
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}["))


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The one choice ``word`` is most likely a typo of, if any is close enough."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def quoted_list(choices: Iterable[str]) -> str:
    return ", ".join(f"'{choice}'" for choice in choices)


def did_you_mean(word: str, choices: Iterable[str], otherwise: str) -> str:
    """``did you mean 'x'?`` when a choice is close to ``word``, else ``otherwise``."""
    match = close_match(word, choices)
    return f"did you mean '{match}'?" if match is not None else otherwise


@dataclass
class Problems:
    """Every problem found in one config, each placed on its line."""

    file: Path | None = None
    lines: Mapping[str, int] | None = None
    found: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str, hint: str) -> None:
        self.found.append(
            Problem(path=path, message=message, hint=hint, file=self.file, line=self.line(path))
        )

    def line(self, path: str) -> int | None:
        """The line of ``path``, else of the nearest enclosing key (for a missing key)."""
        if self.lines is None:
            return None
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = parent_path(path)

    def where(self, path: str) -> str:
        """`` on line N`` for messages that point at another place, or nothing without lines."""
        line = self.line(path) if self.lines is not None and path in self.lines else None
        return f" on line {line}" if line is not None else ""

    def any_under(self, prefix: str, *, except_under: Iterable[str] = ()) -> bool:
        """Whether a problem was already reported inside ``prefix`` (to avoid cascades)."""
        skipped = tuple(except_under)
        return any(
            is_under(p.path, prefix) and not any(is_under(p.path, s) for s in skipped)
            for p in self.found
        )

    def error(self) -> ConfigError:
        """All problems found so far, ordered by line, as one error."""
        return ConfigError(sorted(self.found, key=lambda p: p.line if p.line is not None else 0))

    def raise_if_any(self) -> None:
        if self.found:
            raise self.error()
