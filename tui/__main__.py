"""``python -m tui --project-dir DIR``: the TUI on the project's running mesh (what
``devmesh tui`` and ``devmesh up`` run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devmesh.client import Endpoint
from devmesh.errors import DevmeshError
from tui.app import MeshApp
from tui.source import LiveSource


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description=__doc__)
    parser.add_argument("--project-dir", "-C", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    project_dir = args.project_dir.resolve()
    try:
        Endpoint.of_project(project_dir)
    except DevmeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    app = MeshApp(LiveSource(project_dir), project=project_dir.name)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
