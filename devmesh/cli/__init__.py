"""The ``devmesh`` command line. ``main`` is the console script; ``run`` the testable edge."""

from devmesh.cli.main import main, run

__all__ = ["main", "run"]
