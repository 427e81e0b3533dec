"""``devmesh doctor``: what ``up`` would use and whether it can, each finding with its fix.

Every check returns a ``Finding``; none raises for what it finds wrong, so one
run reports everything at once (the config, the runtime and why, the Docker
daemon, the images, the host ports, the control plane).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.config.model import Project
from devmesh.errors import DevmeshError
from devmesh.plan import exposed, plan_instances
from devmesh.runtime.choice import RuntimeName, choose
from devmesh.runtime.docker import containers, labels
from devmesh.runtime.docker.builds import build_jobs, check_job, image_exists, local_image_id
from devmesh.runtime.docker.daemon import connect, daemon_address
from devmesh.runtime.docker.runtime import resolve_base_image
from devmesh.runtime.docker.sidecar_image import REPOSITORY, inputs_hash
from devmesh.runtime.docker.wheels import requirement
from devmesh.runtime.ports import port_in_use
from devmesh.runtime.processes import RuntimeRecord, is_alive
from devmesh.workspace import Workspace

Outcome = Literal["ok", "info", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    outcome: Outcome
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def examine(
    project: Project, config: Path, workspace: Workspace, base_image: str | None
) -> list[Finding]:
    found = [
        Finding(
            "config",
            "ok",
            f"{config.name} is valid: project {project.name}, {len(project.services)} services, "
            f"{len(plan_instances(project))} instances",
        )
    ]
    try:
        choice = choose(project, RuntimeName.auto)
        found.append(
            Finding("runtime", "info", f"`devmesh up` uses {choice.name}: {choice.reason}")
        )
        docker_needed = choice.name is RuntimeName.docker
    except DevmeshError as exc:
        found.append(Finding("runtime", "fail", exc.message, exc.hint))
        docker_needed = True
    try:
        client = connect()
    except DevmeshError as exc:
        found.append(Finding("docker", "fail" if docker_needed else "warn", exc.message, exc.hint))
    else:
        try:
            docker_found = _docker(client, project, workspace, base_image)
        except DevmeshError as exc:
            docker_found = [Finding("docker", "fail", exc.message, exc.hint)]
        finally:
            client.close()
        if not docker_needed:  # `up` would not use Docker: nothing there stops it
            docker_found = [
                replace(f, outcome="warn") if f.outcome == "fail" else f for f in docker_found
            ]
        found += docker_found
    found += _ports(project, workspace)
    found.append(_controlplane(workspace))
    return found


def _docker(
    client: docker.DockerClient, project: Project, workspace: Workspace, given: str | None
) -> list[Finding]:
    version = client.version().get("Version", "?")
    found = [Finding("docker", "ok", f"Docker Engine {version} answers at {daemon_address()}")]
    base = resolve_base_image(project, given)
    base_id = local_image_id(client, base)
    if base_id is None:
        found.append(
            Finding(
                "base image",
                "fail",
                f"{base} is not on this machine",
                f"pull it (`docker pull {base}`), or build one from Debian packages with "
                "scripts/build-base-image and pass --base-image (or set $DEVMESH_BASE_IMAGE)",
            )
        )
    else:
        found.append(Finding("base image", "ok", f"{base} is here"))
    if base_id:
        tag = f"{REPOSITORY}:{inputs_hash(base_id, requirement())}"
        if image_exists(client, tag):
            found.append(Finding("sidecar image", "ok", f"{tag} is built and up to date"))
        else:
            found.append(
                Finding(
                    "sidecar image",
                    "info",
                    f"{tag} will be built by the next `devmesh up` (it downloads aiohttp's "
                    "wheels from PyPI once, then works offline)",
                )
            )
    for spec in plan_instances(project):
        if spec.image is None or spec.build is not None:  # with build:, the image is built
            continue
        if image_exists(client, spec.image):
            found.append(Finding(f"image of {spec.id}", "ok", f"{spec.image} is here"))
        else:
            found.append(
                Finding(
                    f"image of {spec.id}",
                    "fail",
                    f"{spec.image} is not on this machine",
                    f"build it, give the service a `build:`, or `docker pull {spec.image}`",
                )
            )
    for job in build_jobs(project):
        try:
            check_job(job)
            found.append(
                Finding(f"build of {', '.join(job.services)}", "ok", f"{job.context} builds")
            )
        except DevmeshError as exc:
            found.append(
                Finding(f"build of {', '.join(job.services)}", "fail", exc.message, exc.hint)
            )
    mine = containers.list_project(client, str(workspace.project_dir))
    if mine:
        running = sum(1 for f in mine if f.status == "running")
        found.append(
            Finding("containers", "info", f"{running} of {len(mine)} containers of the mesh run")
        )
    network = labels.network_name(project.name)
    others = {f.project_dir for f in containers.list_named(client, project.name)}
    others.discard(str(workspace.project_dir))
    if others:
        found.append(
            Finding(
                "name",
                "fail",
                f"another folder runs a mesh named {project.name}: {sorted(others)[0]}",
                f"stop it there, or rename this project (its network would be {network})",
            )
        )
    return found


def _ports(project: Project, workspace: Workspace) -> list[Finding]:
    running = RuntimeRecord.load(workspace.runtime_file) is not None
    found = []
    for service, port in exposed(project).items():
        if not port_in_use(port):
            found.append(Finding(f"port {port}", "ok", f"free for {service}"))
        elif running:
            found.append(Finding(f"port {port}", "info", f"held by this mesh, for {service}"))
        else:
            found.append(
                Finding(
                    f"port {port}",
                    "fail",
                    f"127.0.0.1:{port}, where {service} is exposed, is in use",
                    f"stop what listens there, or change `expose:` of {service} "
                    f"({project.where(f'services.{service}.expose')})",
                )
            )
    return found


def _controlplane(workspace: Workspace) -> Finding:
    record = RuntimeRecord.load(workspace.runtime_file)
    process = record.find("controlplane") if record is not None else None
    if process is None:
        return Finding("control plane", "info", "not running (`devmesh up` starts it)")
    if not is_alive(process):
        return Finding(
            "control plane",
            "fail",
            "the mesh is up but its control plane stopped",
            "run `devmesh up`: it starts it again on the same port",
        )
    try:
        endpoint = Endpoint.of(workspace)
        asyncio.run(_healthz(endpoint))
    except DevmeshError as exc:
        return Finding("control plane", "fail", exc.message, exc.hint)
    return Finding("control plane", "ok", f"answers at {endpoint.url}")


async def _healthz(endpoint: Endpoint) -> None:
    async with ControlPlaneClient(endpoint) as client:
        await client.healthz()
