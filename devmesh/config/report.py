"""Collecting config problems with their lines, and the suggestions that go in hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from devmesh.errors import ConfigError, Problem


def parent_path(path: str) -> str:
    """The enclosing path: ``a.b[0]`` -> ``a.b`` -> ``a`` -> ``""``."""
    if path.endswith("]") and "[" in path:
        return path[: path.rindex("[")]
    return path.rpartition(".")[0]


def source_path(path: str, sources: Mapping[str, str]) -> str:
    """``path`` as the file it was converted from names it, through its nearest mapped parent.

    ``sources`` maps converted paths to the file's (``services.web.expose`` ->
    ``services.web.ports[0]``); a path none of whose parents is mapped stays as it is.
    """
    prefix = path
    while prefix and prefix not in sources:
        prefix = parent_path(prefix)
    return sources[prefix] + path[len(prefix) :] if prefix else path


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


@dataclass(frozen=True)
class Wording:
    """How hints name the settings they ask to change: as ``devmesh.yaml`` does by default."""

    other_host_port: str = "another `expose:` port"
    """What to give one of two services that expose the same host port."""
    no_host_port: str = "remove `expose:`"
    """How to stop exposing a service on the host."""
    examples: Mapping[str, str] = field(default_factory=dict)
    """Examples of the numbers a service's key takes, where the file writes them otherwise
    (``replicas`` -> ``deploy: {replicas: 2}``)."""


@dataclass(frozen=True)
class Origin:
    """The file a config was converted from (a compose file), for its problems to point into."""

    problems: Sequence[Problem] = ()
    """What the conversion found wrong, at the file's own paths."""
    paths: Mapping[str, str] = field(default_factory=dict)
    """The file's path of each converted path (see ``source_path``)."""
    wording: Wording = Wording()


@dataclass
class Problems:
    """Every problem found in one config, each placed on its line."""

    file: Path | None = None
    lines: Mapping[str, int] | None = None
    found: list[Problem] = field(default_factory=list)
    origin: Origin = Origin()
    """For a converted config: the conversion's problems, the file's paths and its wording."""

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
            for p in (*self.origin.problems, *self.found)
        )

    def error(self) -> ConfigError:
        """All problems found so far, ordered by line, as one error.

        For a converted config, the conversion's problems come with them, and each
        path is the file's; a problem at a path the conversion already reported is
        left out, and all of them when it found the whole file wrong (at path "").
        """
        given = list(self.origin.problems)
        own = [replace(p, path=source_path(p.path, self.origin.paths)) for p in self.found]
        reported = {p.path for p in given}
        shown = [*given, *(p for p in own if "" not in reported and p.path not in reported)]
        return ConfigError(sorted(shown, key=lambda p: p.line if p.line is not None else 0))

    def raise_if_any(self) -> None:
        if self.found or self.origin.problems:
            raise self.error()
