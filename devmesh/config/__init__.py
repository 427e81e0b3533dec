"""``devmesh.yaml``: find it, load it, validate it into the typed ``Project`` model, dump it back.

Every problem in a config is reported at once, each with its file, line,
dotted path and a hint, as one ``devmesh.errors.ConfigError``.
"""

from __future__ import annotations

from devmesh.config.dump import dump_project
from devmesh.config.loader import CONFIG_NAMES, find_config, load_project
from devmesh.config.validate import parse_project

__all__ = ["CONFIG_NAMES", "dump_project", "find_config", "load_project", "parse_project"]
