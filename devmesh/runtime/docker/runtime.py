"""The Docker runtime: every instance a container, each with a sidecar container attached.

``up`` builds what needs building (the sidecar image, the services' images)
before it touches anything, makes the project network, starts (or keeps) the
control plane on this machine, then converges the containers to the config:
kept when unchanged, recreated when changed, removed when gone. Sidecars
start first, each followed by its interception step; then the services level
by level in dependency order, each level waited on until ready. If anything
fails, everything of the project is removed and the error says which
instance failed and why, with its last log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.config import dump_project
from devmesh.config.model import DEFAULT_BASE_IMAGE, Project
from devmesh.errors import DevmeshError, UsageError
from devmesh.plan import (
    InstanceSpec,
    describe_instance,
    expected_proxies,
    exposed,
    plan_instances,
    start_levels,
)
from devmesh.runtime.controlplane import (
    failure,
    held_for_restart,
    start_controlplane,
    wait_converged,
)
from devmesh.runtime.dataplane import crate_dir, docker_binary
from devmesh.runtime.docker import containers, labels, reconcile
from devmesh.runtime.docker.builds import build_jobs, build_service_image, check_job, local_image_id
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.readiness import Watch
from devmesh.runtime.docker.sidecar_image import ensure_rust_sidecar_image, ensure_sidecar_image
from devmesh.runtime.docker.teardown import forget_record, remove_project
from devmesh.runtime.docker.topology import (
    ContainerSpec,
    MeshSettings,
    desired_containers,
    init_spec,
)
from devmesh.runtime.ports import port_in_use
from devmesh.runtime.processes import (
    RuntimeRecord,
    is_alive,
    restarting,
    set_supervised,
    stop_all,
)
from devmesh.runtime.progress import Progress, SilentProgress
from devmesh.workspace import Workspace

BASE_IMAGE_ENV = "DEVMESH_BASE_IMAGE"
T = TypeVar("T")


def resolve_base_image(project: Project, given: str | None) -> str:
    """The base image: ``--base-image``, else ``$DEVMESH_BASE_IMAGE``, else the config's."""
    return given or os.environ.get(BASE_IMAGE_ENV) or project.base_image or DEFAULT_BASE_IMAGE


class DockerRuntime:
    name = "docker"

    def __init__(
        self,
        project: Project,
        workspace: Workspace,
        progress: Progress | None = None,
        base_image: str | None = None,
    ) -> None:
        self.project = project
        self.ws = workspace
        self.progress: Progress = progress or SilentProgress()
        self.base_image = resolve_base_image(project, base_image)
        self.project_dir = str(workspace.project_dir)
        self._pool: ThreadPoolExecutor | None = None
        self._created: list[str] = []
        """Containers this run created (to remove them, and only them, if it fails)."""
        self.rust_binary: Path | None = None
        """The Rust sidecar's static binary, when ``$DEVMESH_DATAPLANE`` is rust (set by ``up``)."""

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking Docker call on the runtime's threads (all joined before a teardown)."""
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _create(self, client: docker.DockerClient, spec: ContainerSpec) -> None:
        self._created.append(spec.name)
        await self._call(containers.create, client, spec)

    # -- up ------------------------------------------------------------------------

    async def up(self) -> None:
        # The Rust data plane's static binary, checked before anything is touched.
        self.rust_binary = docker_binary(os.environ, crate_dir(), Path.is_file)
        check_runnable(self.project)
        for job in build_jobs(self.project):
            check_job(job)
        client = connect()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="devmesh-docker")
        try:
            await self._up(client)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            client.close()

    async def _up(self, client: docker.DockerClient) -> None:
        self.ws.ensure()
        token = self.ws.token(create=True)
        self._check_name_is_ours(client)
        previous = self._previous_record()
        observed = containers.list_project(client, self.project_dir)
        self._check_ports(observed)
        images = await asyncio.to_thread(self._images, client)
        running = previous is not None and bool(observed)
        # Everything above only checked and built; from here on, a failure removes what this
        # run started (on a mesh that was down: all of it, control plane included).
        try:
            record = previous or RuntimeRecord(
                self.ws.runtime_file, self.project.name, "", runtime=self.name
            )
            # Not supervised while this run changes containers (its own removals are not
            # deaths to repair); supervised again once the mesh is up.
            with RuntimeRecord.locked(self.ws.runtime_file) as current:
                if current is not None:
                    record = current
                record.supervised = False
                record.stopped = []
                record.save()
            network, created = containers.ensure_network(
                client, labels.network_name(self.project.name), self._labels()
            )
            endpoint = await self._controlplane(record, network, fresh_network=created)
            async with ControlPlaneClient(endpoint) as cp:
                await cp.apply_project(dump_project(self.project))
                settings = MeshSettings(
                    project_dir=self.project_dir,
                    network=network.name,
                    sidecar_image=images.pop(""),
                    controlplane_url=f"http://{network.gateway}:{endpoint.port}",
                    token=token,
                )
                desired = desired_containers(self.project, images, settings)
                plan = reconcile.plan(desired, [f.observed() for f in observed])
                if plan.unchanged:
                    self.progress.note(
                        f"the mesh for {self.project.name} is already up "
                        f"({len(plan.keep)} containers unchanged)"
                    )
                else:
                    await self._converge(client, cp, plan, settings)
                await wait_converged(cp, self._expected_proxies(), self._logs_hint())
        except BaseException:
            assert self._pool is not None
            self._pool.shutdown(wait=True, cancel_futures=True)  # no create is still on its way
            if running:
                self.progress.note("removing what this run started; the rest is left as it was")
                with contextlib.suppress(DevmeshError):
                    containers.remove(client, reversed(self._created))
                self._supervise()
            else:
                self.progress.note("removing everything that had started")
                self._teardown(client)
            raise
        self._supervise()

    def _supervise(self) -> None:
        """From now on, what dies is started again (``devmesh.runtime.docker.supervisor``)."""
        set_supervised(self.ws.runtime_file, True)

    def _previous_record(self) -> RuntimeRecord | None:
        """The record of this project's Docker mesh if one runs; refuses a local one."""
        record = RuntimeRecord.load(self.ws.runtime_file)
        if record is not None and record.runtime != self.name:
            if any(is_alive(p) for p in record.processes):
                raise UsageError(
                    f"the mesh for {record.project} is already running on the "
                    f"{record.runtime} runtime",
                    "run `devmesh down`, then `devmesh up`",
                )
            return None
        return record

    def _check_name_is_ours(self, client: docker.DockerClient) -> None:
        others = {
            f.project_dir
            for f in containers.list_named(client, self.project.name)
            if f.project_dir != self.project_dir
        }
        if others:
            raise UsageError(
                f"another folder runs a mesh named {self.project.name}: {sorted(others)[0]}",
                f"stop it (`devmesh -C {sorted(others)[0]} down`), or give this project "
                "another `name:` in devmesh.yaml",
            )

    def _check_ports(self, observed: list[containers.Found]) -> None:
        """Refuse, before starting anything, an exposed port that something else holds."""
        ours = {port for f in observed if f.status == "running" for port in f.published}
        for service, port in exposed(self.project).items():
            if port not in ours and port_in_use(port):
                raise UsageError(
                    f"port {port} on 127.0.0.1, where {service} is exposed, is already in use "
                    f"({self.project.where(f'services.{service}.expose', f'services.{service}')})",
                    "stop what listens there, or change `expose:` for that service",
                )

    def _images(self, client: docker.DockerClient) -> dict[str, str]:
        """The image of every instance by id, and the sidecar image under ``""``."""
        began = time.monotonic()
        self.progress.begin(f"sidecar image on {self.base_image}")
        on_line = self._step("sidecar image")
        if self.rust_binary is not None:
            tag, built = ensure_rust_sidecar_image(
                client, self.base_image, self.rust_binary, on_line
            )
        else:
            tag, built = ensure_sidecar_image(client, self.base_image, on_line)
        self.progress.done(
            "sidecar image", f"{tag} {'built' if built else 'up to date'}", _since(began)
        )
        images: dict[str, str] = {"": tag}
        for spec in plan_instances(self.project):
            if spec.image is not None and spec.build is None:
                images[spec.id] = self._local_image(client, spec)
        for job in build_jobs(self.project):
            began = time.monotonic()
            name = job.tags[0]
            self.progress.begin(f"building {name}")
            image_id, built = build_service_image(
                client,
                self.project,
                job,
                self.base_image,
                self._step(f"building {name}"),
                self.ws.images_file,
            )
            self.progress.done(
                f"image of {', '.join(job.services)}",
                f"{name} {'built' if built else 'up to date'}",
                _since(began),
            )
            for instance in job.instances:
                images[instance] = image_id
        return images

    def _step(self, what: str) -> Callable[[str], None]:
        """Show a build's latest output line as the step in progress."""
        return lambda line: self.progress.begin(f"{what}: {line[:60]}")

    def _local_image(self, client: docker.DockerClient, spec: InstanceSpec) -> str:
        assert spec.image is not None
        found = local_image_id(client, spec.image)
        if found is not None:
            return found
        path = f"services.{spec.service}"
        where = self.project.where(f"{path}.versions.{spec.version}.image", f"{path}.image", path)
        raise UsageError(
            f"the image {spec.image} of {describe_instance(spec)} is not on this machine ({where})",
            f"build it, give the service a `build:` instead, or pull it (`docker pull "
            f"{spec.image}`)",
        )

    async def _controlplane(
        self, record: RuntimeRecord, network: containers.Network, *, fresh_network: bool
    ) -> Endpoint:
        current = record.find("controlplane")
        if current is not None and is_alive(current) and not fresh_network:
            return Endpoint.of(self.ws)
        port = current.ports[0] if current is not None and current.ports else 0
        if current is not None:
            stop_all([current])
            record.processes = [p for p in record.processes if p is not current]
        if fresh_network:  # every container will be new: none of the kept routes holds
            self.ws.roster_file.unlink(missing_ok=True)
        return await start_controlplane(
            self.ws,
            record,
            port,
            self.progress,
            listen=[network.gateway],
            allow=[network.subnet],
        )

    async def _converge(
        self,
        client: docker.DockerClient,
        cp: ControlPlaneClient,
        plan: reconcile.Plan,
        settings: MeshSettings,
    ) -> None:
        if plan.remove:
            containers.remove(client, [o.name for o in plan.remove])
        proxies = [s for s in plan.create if s.role in ("sidecar", "gateway")]
        if proxies:
            began = time.monotonic()
            self.progress.begin(f"starting {len(proxies)} sidecars")
            await _all(self._start_proxy(client, s, settings) for s in proxies)
            await Watch(client, self.project, self.project_dir).connected(cp, proxies)
            self.progress.done("sidecars", f"{len(proxies)} connected", _since(began))
        new_services = {s.instance: s for s in plan.create if s.role == "service"}
        kept = {s.name for s in plan.keep if s.role == "sidecar"}
        for level in start_levels(self.project):
            await self._start_level(client, cp, level, new_services, kept)

    async def _start_proxy(
        self, client: docker.DockerClient, spec: ContainerSpec, settings: MeshSettings
    ) -> None:
        await self._create(client, spec)
        if spec.role != "sidecar" or self.project.interception_of(spec.service) != "transparent":
            return
        step = init_spec(self.project, spec, settings)
        self._created.append(step.name)
        code, output = await self._call(containers.run_once, client, step)
        if code != 0:
            raise failure(
                f"could not install the traffic redirect for {spec.instance} (exit code {code})",
                f"the interception step of {spec.instance}",
                hint="Docker must allow NET_ADMIN for it; where it may not, set "
                f"`interception: env` for {spec.service} or for the project in devmesh.yaml",
                lines=output[-containers.LOG_LINES :],
            )

    async def _start_level(
        self,
        client: docker.DockerClient,
        cp: ControlPlaneClient,
        level: list[str],
        new_services: dict[str, ContainerSpec],
        kept_sidecars: set[str],
    ) -> None:
        specs = [s for s in plan_instances(self.project) if s.service in level]
        began = time.monotonic()
        starting = [new_services[s.id] for s in specs if s.id in new_services]
        for spec in starting:
            self.progress.begin(f"starting {spec.instance}")
        await _all(self._create(client, s) for s in starting)
        watch = Watch(client, self.project, self.project_dir)
        # A kept sidecar still reports how the old container was: ask the new one directly.
        await _all(
            watch.answers(spec)
            for spec in specs
            if spec.id in new_services and new_services[spec.id].join in kept_sidecars
        )
        await watch.ready(cp, specs)
        if starting:
            for service in level:
                count = sum(1 for s in specs if s.service == service)
                self.progress.done(
                    service, f"{count} instance{'s' if count > 1 else ''} ready", _since(began)
                )

    def _expected_proxies(self) -> int:
        return expected_proxies(self.project)

    def _logs_hint(self) -> str:
        return "see the sidecars' logs with `devmesh logs SERVICE --sidecar`"

    def _labels(self) -> dict[str, str]:
        return {labels.PROJECT: self.project.name, labels.PROJECT_DIR: self.project_dir}

    def _teardown(self, client: docker.DockerClient) -> None:
        """Best effort: a step that fails does not keep the others from running."""
        with contextlib.suppress(DevmeshError):
            remove_project(client, self.project_dir)
        record = RuntimeRecord.load(self.ws.runtime_file)
        if record is not None:
            stop_all(record.processes)
        forget_record(self.ws)

    # -- day two -------------------------------------------------------------------

    async def restart(self, service: str, announce: Callable[[str], None]) -> list[str]:
        """Restart the service containers of ``service`` (sidecars stay) one at a time, each
        held at its sidecar meanwhile, and wait until ready."""
        specs = [s for s in plan_instances(self.project) if s.service == service]
        client = connect()
        try:
            watch = Watch(client, self.project, self.project_dir)
            async with ControlPlaneClient(Endpoint.of(self.ws)) as cp:
                for spec in specs:
                    async with held_for_restart(cp, spec.id, self.progress.note):
                        await self._restart_one(watch, spec)
                    announce(f"restarted {spec.id}")
                await watch.ready(cp, specs)
        finally:
            client.close()
        return [s.id for s in specs]

    async def _restart_one(self, watch: Watch, spec: InstanceSpec) -> None:
        with restarting(self.ws.runtime_file, spec.id):  # its supervisor keeps off meanwhile
            await asyncio.to_thread(
                containers.restart, watch.client, watch.name(spec.id, "service")
            )
            await watch.answers(spec)

    def kill(self, instance: str) -> None:
        """Kill the instance's service container; it stays down until ``restart`` or ``up``."""
        client = connect()
        try:
            with RuntimeRecord.locked(self.ws.runtime_file) as record:
                name = labels.container_name(self.project.name, instance, "service")
                containers.kill(client, name)
                if record is not None and instance not in record.stopped:
                    record.stopped.append(instance)
                    record.save()
        finally:
            client.close()


def check_runnable(project: Project) -> None:
    """Refuse, before anything starts, an instance with no image and no build."""
    for spec in plan_instances(project):
        if spec.image is None and spec.build is None:
            path = f"services.{spec.service}"
            raise UsageError(
                f"{describe_instance(spec)} has no image or build, and the docker runtime runs "
                f"images ({project.where(f'{path}.versions.{spec.version}', path)})",
                "add `image:` or `build:` for it, or run the project with `--runtime local`",
            )


async def _all(awaitables: Iterable[Awaitable[object]]) -> None:
    """Run all to their end, then raise the first failure: none is left running behind it."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _since(began: float) -> float:
    return time.monotonic() - began
