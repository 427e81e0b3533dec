"""Validate config data (from YAML or JSON) into a ``Project``, reporting all problems at once.

Two passes, as docker-compose does: ``validate_shape`` checks each value on its
own (types, ranges, required and unknown keys) and builds what it can;
``validate_refs`` then checks what values say about each other (dependencies,
ports, versions named by splits). Every problem from both passes is raised
together as one ``ConfigError``, ordered by line. A config converted from
another file (a compose file) is validated with its ``Origin``: the problems
the conversion found come in the same error, and every problem speaks of that
file's paths and keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devmesh.config.model import Project
from devmesh.config.readers import describe
from devmesh.config.report import Origin, Problems
from devmesh.config.validate_refs import check_references
from devmesh.config.validate_shape import read_shape


def parse_project(
    data: object,
    *,
    file: Path | None = None,
    lines: Mapping[str, int] | None = None,
    default_name: str = "devmesh",
    origin: Origin | None = None,
) -> Project:
    """The ``Project`` described by ``data``; ``ConfigError`` listing every problem otherwise.

    ``lines`` maps dotted paths to lines in ``file`` (see ``yamlsource``); without
    it, problems carry no line. ``origin``: the file ``data`` was converted from.
    """
    problems = Problems(file=file, lines=lines, origin=origin or Origin())
    if not isinstance(data, dict):
        problems.add(
            "",
            f"the configuration must be a mapping, not {describe(data)}",
            "start it with `services:` and list the services under it",
        )
        raise problems.error()
    shape = read_shape(problems, data, default_name)
    check_references(problems, shape)
    problems.raise_if_any()
    return Project(
        name=shape.name,
        services=shape.services,
        policies=shape.policies,
        base_image=shape.base_image,
        interception=shape.interception,
        mtls=shape.mtls,
        authorization=shape.authorization,
        source=file,
        lines=dict(lines or {}),
    )
