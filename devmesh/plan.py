"""What instances a project runs, and in what order they start.

Pure functions of the project model, shared by every runtime (which start
the instances) and the control plane (which expects them to connect).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devmesh.config.model import DEFAULT_VERSION, Build, Health, Project, Service


@dataclass(frozen=True)
class InstanceSpec:
    id: str
    """``catalog-v1-2`` for a versioned service, ``pricing-1`` otherwise."""
    service: str
    version: str
    index: int
    """1-based replica number within the version."""
    command: str | None
    image: str | None
    build: Build | None
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    health: Health = field(default_factory=Health)


def instance_id(service: Service, version: str, index: int) -> str:
    return f"{service.name}-{version}-{index}" if service.versioned else f"{service.name}-{index}"


def service_instances(service: Service) -> list[InstanceSpec]:
    return [
        InstanceSpec(
            id=instance_id(service, version.name, index),
            service=service.name,
            version=version.name,
            index=index,
            command=version.command,
            image=version.image,
            build=version.build,
            env=version.env,
            port=service.port,
            health=service.health,
        )
        for version in service.versions
        for index in range(1, version.replicas + 1)
    ]


def describe_instance(spec: InstanceSpec) -> str:
    """``catalog version v2``, or just ``pricing`` for an unversioned service."""
    return (
        spec.service
        if spec.version == DEFAULT_VERSION
        else f"{spec.service} version {spec.version}"
    )


def plan_instances(project: Project) -> list[InstanceSpec]:
    return [spec for service in project.services.values() for spec in service_instances(service)]


def start_levels(project: Project) -> list[list[str]]:
    """Service names grouped so that each group depends only on earlier groups.

    The config validator has already refused cycles and unknown names.
    """
    remaining = {name: set(s.depends_on) for name, s in project.services.items()}
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        level = [name for name, deps in remaining.items() if deps <= done]
        if not level:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        levels.append(level)
        done.update(level)
        for name in level:
            del remaining[name]
    return levels


def exposed(project: Project) -> dict[str, int]:
    """Host port per exposed service."""
    return {name: s.expose for name, s in project.services.items() if s.expose is not None}


def gateway_routes(project: Project) -> dict[str, int]:
    """Host port per exposed HTTP service: what the ingress gateway listens for.

    An exposed tcp service is published directly (its traffic is not HTTP).
    """
    return {
        name: port
        for name, port in exposed(project).items()
        if project.services[name].protocol == "http"
    }


def expected_proxies(project: Project) -> int:
    """How many proxies connect to the control plane: every sidecar, and the gateway."""
    return len(plan_instances(project)) + (1 if gateway_routes(project) else 0)


def url_of(project: Project, service: str) -> str | None:
    """Where an exposed service is reached from this machine."""
    svc = project.services[service]
    if svc.expose is None:
        return None
    scheme = "tcp" if svc.protocol == "tcp" else "http"
    return f"{scheme}://127.0.0.1:{svc.expose}"
