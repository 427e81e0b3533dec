"""The CLI's edge: the only place user-facing errors are caught and printed."""

from __future__ import annotations

import sys

# Importing the command modules registers their commands on ``app``.
from devmesh.cli import (  # noqa: F401
    doctor,
    faults,
    inspect,
    instances,
    lifecycle,
    live,
    policy,
    security,
    traffic,
)
from devmesh.cli.app import app
from devmesh.cli.output import print_error
from devmesh.errors import EXIT_FAILURE, DevmeshError


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code.

    Typer reports bad flags itself (exit 2) and turns Ctrl-C into exit 130; a
    ``DevmeshError`` is printed as a sentence, its details and a hint. Any other
    exception is a bug in devmesh and keeps its traceback.
    """
    try:
        app(args=argv, prog_name="devmesh")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILURE)
    except DevmeshError as exc:
        print_error(exc)
        return exc.exit_code
    return 0


def main() -> None:
    sys.exit(run())
