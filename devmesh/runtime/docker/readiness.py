"""Waiting on a project's containers: sidecars connected, instances ready, none exited.

The control plane says what is connected and ready (the sidecars report their
instances' health checks); Docker says what has exited. Every wait has a
deadline and fails fast, naming the container, its exit code and its last log
lines, and pointing at the config line to fix.
"""

from __future__ import annotations

import asyncio
import time

import docker

from devmesh.client import ControlPlaneClient
from devmesh.config.model import Project
from devmesh.plan import InstanceSpec
from devmesh.runtime.controlplane import (
    StartFailed,
    connected_proxies,
    failure,
    instance_states,
    is_ready,
)
from devmesh.runtime.docker import containers, labels
from devmesh.runtime.docker.daemon import docker_errors
from devmesh.runtime.docker.topology import (
    RUST_SIDECAR_BINARY,
    ContainerSpec,
    is_rust_sidecar_image,
)

SIDECAR_CONNECT_TIMEOUT = 30.0
POLL = 0.2
_ALIVE = ("running", "created", "restarting")


class Watch:
    """Waits on the containers of one project (in ``project_dir``)."""

    def __init__(self, client: docker.DockerClient, project: Project, project_dir: str) -> None:
        self.client = client
        self.project = project
        self.project_dir = project_dir

    def name(self, instance: str, role: labels.Role) -> str:
        return labels.container_name(self.project.name, instance, role)

    def check_running(self, names: list[str]) -> None:
        """Raise if one of these containers stopped (its exit code and last log lines)."""
        wanted = set(names)
        for found in containers.list_project(self.client, self.project_dir):
            if found.name not in wanted or found.status in _ALIVE:
                continue
            code = "" if found.exit_code is None else f" with code {found.exit_code}"
            what = found.name if found.role != "sidecar" else f"the sidecar of {found.instance}"
            hint = "fix what its log shows and run `devmesh up` again"
            if found.role == "service":
                path = f"services.{found.service}"
                hint = (
                    f"fix the image or command of {found.service} "
                    f"({self.project.where(f'{path}.command', f'{path}.image', path)}) "
                    "and run `devmesh up` again"
                )
            raise failure(
                f"{what} exited{code} before it was ready",
                f"docker logs {found.name}",
                lines=containers.logs_of(self.client, found.name),
                hint=hint,
            )

    async def connected(self, cp: ControlPlaneClient, proxies: list[ContainerSpec]) -> None:
        """Wait until every one of ``proxies`` (sidecars, gateway) is connected to ``cp``."""
        waiting = {s.instance: s for s in proxies}
        deadline = time.monotonic() + SIDECAR_CONNECT_TIMEOUT
        while waiting:
            for instance in connected_proxies(await cp.status()):
                waiting.pop(instance, None)
            if not waiting:
                return
            self.check_running([s.name for s in waiting.values()])
            if time.monotonic() > deadline:
                spec = next(iter(waiting.values()))
                raise failure(
                    f"the sidecar of {spec.instance} did not reach the control plane within "
                    f"{SIDECAR_CONNECT_TIMEOUT:g}s",
                    f"docker logs {spec.name}",
                    lines=containers.logs_of(self.client, spec.name),
                    hint="check that containers may reach this machine on the network's "
                    "gateway address (a firewall?); `devmesh doctor` helps",
                )
            await asyncio.sleep(POLL)

    async def ready(self, cp: ControlPlaneClient, specs: list[InstanceSpec]) -> None:
        """Wait until every instance in ``specs`` is ready, failing fast if one exits."""
        began = time.monotonic()
        pending = {s.id: s for s in specs}
        while pending:
            states = instance_states(await cp.status())
            self.check_running(
                [self.name(i, role) for i in pending for role in ("service", "sidecar")]
            )
            for instance, spec in list(pending.items()):
                state = states.get(instance, {})
                if is_ready(state, spec, time.monotonic() - began):
                    del pending[instance]
                elif time.monotonic() - began > spec.health.start_timeout:
                    path = f"services.{spec.service}"
                    name = self.name(instance, "service")
                    raise failure(
                        f"{instance} did not become ready within {spec.health.start_timeout:g}s: "
                        f"{state.get('detail', 'no report')}",
                        f"docker logs {name}",
                        lines=containers.logs_of(self.client, name),
                        hint=f"make sure it listens on port {spec.port} in its container, or "
                        f"give it more time with {path}.health.start_timeout "
                        f"({self.project.where(f'{path}.health', path)})",
                    )
            if pending:
                await asyncio.sleep(POLL)

    async def answers(self, spec: InstanceSpec) -> None:
        """Probe the instance from its sidecar (same namespace) until its check passes.

        Used after a restart, when the control plane may still hold the state
        from before it (the sidecar needs a few failed probes to notice).
        """
        if spec.port is None:
            return
        sidecar = self.name(spec.id, "sidecar")
        image = await asyncio.to_thread(self._image_of, sidecar)
        check = probe_argv(image, spec.port, spec.health.path)
        deadline = time.monotonic() + spec.health.start_timeout
        while True:
            code, _ = await asyncio.to_thread(containers.exec_in, self.client, sidecar, check)
            if code == 0:
                return
            self.check_running([self.name(spec.id, "service")])
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{spec.id} did not answer on port {spec.port} within "
                    f"{spec.health.start_timeout:g}s of its restart",
                    f"see `devmesh logs {spec.id}`",
                )
            await asyncio.sleep(POLL)

    def _image_of(self, name: str) -> str:
        with docker_errors(f"inspecting {name}"):
            return str(self.client.containers.get(name).attrs["Config"]["Image"])


def probe_argv(sidecar_image: str, port: int, path: str | None) -> list[str]:
    """The command, run in the sidecar, that exits 0 when the instance's check passes:
    ``devmesh-proxy probe`` in the Rust sidecar image, else ``probe_script``."""
    if is_rust_sidecar_image(sidecar_image):
        return [
            RUST_SIDECAR_BINARY,
            "probe",
            "--port",
            str(port),
            *(["--path", path] if path else []),
        ]
    return ["python3", "-c", probe_script(port, path)]


def probe_script(port: int, path: str | None) -> str:
    """Python for the sidecar's interpreter: exit 0 when the health check passes."""
    if path:
        return (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    urllib.request.urlopen({f'http://127.0.0.1:{port}{path}'!r}, timeout=2)\n"
            "except urllib.error.HTTPError as e:\n"
            "    sys.exit(0 if e.code < 500 else 1)\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
    return f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
