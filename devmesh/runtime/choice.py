"""Which runtime ``up`` uses, and why (``devmesh doctor`` prints the same reason).

``docker`` is the default when a daemon answers and every service has an image
or a build; a project of commands only runs on the ``local`` runtime, as does
every project when no daemon answers. ``--runtime`` overrides the choice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from devmesh.config.model import Project
from devmesh.errors import UsageError
from devmesh.plan import plan_instances
from devmesh.runtime.docker.daemon import probe


class RuntimeName(enum.StrEnum):
    auto = "auto"
    docker = "docker"
    local = "local"


@dataclass(frozen=True)
class Choice:
    name: RuntimeName
    reason: str


def choose(project: Project, requested: RuntimeName, running: str | None = None) -> Choice:
    """``running``: the runtime of this project's mesh if one is up (``up`` converges it)."""
    if requested is not RuntimeName.auto:
        return Choice(requested, f"--runtime {requested.value}")
    if running is not None:
        return Choice(RuntimeName(running), f"the mesh already runs on the {running} runtime")
    specs = plan_instances(project)
    imageless = [s.service for s in specs if s.image is None and s.build is None]
    commandless = [s.service for s in specs if s.command is None]
    if imageless:
        return Choice(
            RuntimeName.local,
            f"{imageless[0]} has no image or build, so the services run as local processes",
        )
    answers, seen = probe()
    if answers:
        return Choice(RuntimeName.docker, f"{seen}, and every service has an image or build")
    if commandless:
        raise UsageError(
            f"{seen}, and {commandless[0]} has no command to run as a local process instead",
            "start Docker, or add `command:` to every service to use `--runtime local`",
        )
    return Choice(RuntimeName.local, f"{seen}; every service has a command to run locally")
