"""The one exception family devmesh raises for things a user can fix.

Library code raises these; only the CLI edge catches them and prints them.
Each carries one sentence saying what is wrong and where, and a hint saying
what to do. Anything that is not a ``DevmeshError`` is a bug in devmesh and
is allowed to show a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
"""Something did not work at run time (a service failed to start, the control plane is down)."""
EXIT_USAGE = 2
"""The user's input is wrong (bad config, bad flag): fix it and run again."""


class DevmeshError(Exception):
    """A problem the user can act on."""

    exit_code = EXIT_FAILURE

    def __init__(
        self, message: str, hint: str | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []
        """Supporting lines shown under the message, e.g. the last lines of a log."""

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(DevmeshError):
    """Bad input on the command line or in a file."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    path: str
    """Dotted path of the offending key, e.g. ``services.catalog.versions.v2``."""
    message: str
    hint: str | None = None
    file: Path | None = None
    line: int | None = None

    def location(self) -> str:
        if self.file is None:
            return "<config>"
        return f"{self.file}:{self.line}" if self.line is not None else str(self.file)

    def __str__(self) -> str:
        where = f"{self.location()}: " + (f"{self.path}: " if self.path else "")
        text = f"{where}{self.message}"
        return f"{text} — {self.hint}" if self.hint else text


class ConfigError(UsageError):
    """A config file has one or more problems; all of them are listed."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = problems
        self.warnings: list[str] = []
        """What the file also says that devmesh leaves out (a compose file's ``restart:``),
        shown with the problems so that one run tells everything."""
        count = len(problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the configuration:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
