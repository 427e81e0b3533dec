"""The names and labels of everything devmesh creates in Docker.

Every container and network carries ``devmesh.project`` and
``devmesh.project-dir``: ``down`` removes exactly what carries the project
folder's label, so it never touches what devmesh did not make, nor another
checkout's mesh of the same name. Containers also say which service, version, instance and role they
are, and carry a hash of their spec, so ``up`` can tell what changed.
"""

from __future__ import annotations

from typing import Literal

PROJECT = "devmesh.project"
PROJECT_DIR = "devmesh.project-dir"
SERVICE = "devmesh.service"
VERSION = "devmesh.version"
INSTANCE = "devmesh.instance"
ROLE = "devmesh.role"
SPEC_HASH = "devmesh.spec-hash"
INPUTS = "devmesh.inputs"
"""On images devmesh builds: the hash of what went into them."""

Role = Literal["sidecar", "service", "gateway", "init"]

GATEWAY = "ingress"


def network_name(project: str) -> str:
    return f"{project}-mesh"


def container_name(project: str, instance: str, role: Role) -> str:
    """``shop-catalog-v1-1`` (the service), ``shop-catalog-v1-1-sidecar``, ``shop-ingress``."""
    if role == "gateway":
        return f"{project}-{GATEWAY}"
    suffix = {"service": "", "sidecar": "-sidecar", "init": "-init"}[role]
    return f"{project}-{instance}{suffix}"


def image_name(project: str, service: str, version: str, versioned: bool) -> str:
    """``shop-catalog:v2`` for a version, ``shop-pricing:latest`` otherwise."""
    return f"{project}-{service}:{version if versioned else 'latest'}"


def project_filter(project: str) -> dict[str, list[str]]:
    """The Docker API filter for everything of one project."""
    return {"label": [f"{PROJECT}={project}"]}
