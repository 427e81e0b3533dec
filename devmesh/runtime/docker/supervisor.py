"""The Docker runtime's supervision: containers of the project that die are started again.

Run by the control plane, one pass at a time (``devmesh.runtime.supervisor``
says when and why). Docker's own restart policies are not used, because a
sidecar cannot simply be restarted: it owns its instance's network namespace,
and a sidecar container that starts again gets a new one. So:

* a service container (or the gateway) that died is started again as it was;
* a sidecar that died is started again, its interception step run again in its
  new namespace, and its service container restarted so that it joins it (the
  service would otherwise be left in the dead namespace, with no network).

An instance killed on purpose (``devmesh kill``) is left down until
``restart`` or ``up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import docker

from devmesh.config.model import Project
from devmesh.errors import DevmeshError
from devmesh.runtime.docker import containers, labels
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.topology import ContainerSpec, MeshSettings, init_spec
from devmesh.runtime.processes import RuntimeRecord
from devmesh.runtime.supervision import Down, Report, RestartSchedule
from devmesh.workspace import Workspace

log = logging.getLogger("devmesh.supervisor")

_RUNNING = ("running", "created", "restarting", "paused")
"""What is not down: running, being made by ``up``, or paused on purpose."""


class DockerSupervisor:
    def __init__(
        self,
        workspace: Workspace,
        project: Callable[[], Project | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``project``: the project as the control plane applied it (not as the file on
        disk may say now)."""
        self.ws = workspace
        self._project = project
        self._clock = clock
        self.schedule = RestartSchedule(clock)
        self._client: docker.DockerClient | None = None
        self._restarts: dict[str, int] = {}

    def check(self, record: RuntimeRecord) -> Report | None:
        """One pass over the project's containers, ``record`` held locked by the caller
        (blocking: run it in a thread)."""
        project = self._project()
        if project is None:
            return None
        if not record.supervised:  # `up` or `down` is at work: it has the last word
            return Report(
                stopped=set(record.stopped),
                restarting=set(record.restarting),
                restarts=dict(self._restarts),
            )
        try:
            client = self._client = self._client or connect()
            found = containers.list_project(client, str(self.ws.project_dir))
        except DevmeshError as exc:
            log.warning("cannot supervise the containers: %s", exc.message)
            self.close()
            return None
        report = Report(
            stopped=set(record.stopped),
            restarting=set(record.restarting),
            restarts=dict(self._restarts),
        )
        services = {f.instance: f for f in found if f.role == "service"}
        for container in found:
            if container.role not in ("sidecar", "service", "gateway"):
                continue
            left_alone = {*record.stopped, *record.restarting}
            if container.role == "service" and container.instance in left_alone:
                self.schedule.forget(container.name)
                continue
            verdict = self.schedule.observe(container.name, container.status in _RUNNING)
            if verdict == "running":
                continue
            code = "" if container.exit_code is None else f" (code {container.exit_code})"
            what = "its sidecar" if container.role != "service" else "its container"
            report.add_down(
                container.instance,
                Down(
                    f"{what} exited{code}; starting it again",
                    sidecar=container.role != "service",
                    seen_at=time.time(),
                ),
            )
            if verdict == "start":
                service = services.get(container.instance)
                if service is not None and service.instance in record.stopped:
                    service = None  # killed on purpose: its sidecar comes back, it does not
                if self._start_again(client, project, container, service):
                    counted = self._restarts.get(container.instance, 0)
                    self._restarts[container.instance] = counted + 1
                self.schedule.started(container.name)
        return report

    def _start_again(
        self,
        client: docker.DockerClient,
        project: Project,
        container: containers.Found,
        service: containers.Found | None,
    ) -> bool:
        """Start ``container`` again (a sidecar: with its namespace's redirects and its
        ``service``); True if it worked."""
        try:
            containers.start(client, container.name)
            if container.role == "sidecar":
                self._intercept_again(client, project, container)
                if service is not None:
                    containers.restart(client, service.name)  # into the new namespace
        except DevmeshError as exc:
            log.error("could not start %s again: %s", container.name, exc.message)
            return False
        log.info("started %s again", container.name)
        return True

    def _intercept_again(
        self, client: docker.DockerClient, project: Project, sidecar: containers.Found
    ) -> None:
        """Install the redirects again in the sidecar's new namespace."""
        if project.services.get(sidecar.service) is None:
            return
        if project.interception_of(sidecar.service) != "transparent":
            return
        spec = ContainerSpec(
            name=sidecar.name,
            role="sidecar",
            instance=sidecar.instance,
            service=sidecar.service,
            version=sidecar.version,
            image=sidecar.image,
        )
        settings = MeshSettings(
            project_dir=str(self.ws.project_dir),
            network=labels.network_name(project.name),
            sidecar_image=sidecar.image,
            controlplane_url="",
            token="",
        )
        code, output = containers.run_once(client, init_spec(project, spec, settings))
        if code != 0:
            log.error(
                "the interception step of %s failed again (exit code %d): %s",
                sidecar.instance,
                code,
                " / ".join(output[-3:]),
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
