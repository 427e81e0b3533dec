"""Thin, typed calls on the Docker API for the project's containers and network.

Each function does one Docker thing and translates its failure (through
``docker_errors``) into a sentence naming the container; the runtime module
decides what to do and in which order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker
import docker.errors

from devmesh.errors import DevmeshError, UsageError
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.daemon import docker_errors
from devmesh.runtime.docker.reconcile import Observed
from devmesh.runtime.docker.topology import ContainerSpec

STOP_TIMEOUT = 5
INIT_TIMEOUT = 60
LOG_LINES = 12


@dataclass(frozen=True)
class Network:
    name: str
    gateway: str
    """The host's address on the network: where the control plane listens for sidecars."""
    subnet: str


@dataclass(frozen=True)
class Found:
    """One container of the project, as listed."""

    name: str
    role: str
    instance: str
    service: str
    status: str
    """Docker's: ``created``, ``running``, ``exited``..."""
    exit_code: int | None
    spec_hash: str
    project_dir: str
    published: tuple[int, ...] = ()
    """Host ports it publishes."""
    version: str = ""
    image: str = ""

    def observed(self) -> Observed:
        return Observed(self.name, self.role, self.spec_hash, self.status == "running")


def list_project(client: docker.DockerClient, project_dir: str) -> list[Found]:
    """Every container devmesh made for the project in ``project_dir``."""
    return [f for f in _list(client, {"label": [f"{labels.PROJECT_DIR}={project_dir}"]})]


def list_named(client: docker.DockerClient, project: str) -> list[Found]:
    """Every container of any project called ``project`` (to spot a clash of names)."""
    return _list(client, labels.project_filter(project))


def _list(client: docker.DockerClient, filters: dict[str, list[str]]) -> list[Found]:
    with docker_errors("listing the project's containers"):
        raw = client.api.containers(all=True, filters=filters)
    found = []
    for item in raw:
        tags = item.get("Labels") or {}
        name = (item.get("Names") or ["/?"])[0].lstrip("/")
        found.append(
            Found(
                name=name,
                role=tags.get(labels.ROLE, "?"),
                instance=tags.get(labels.INSTANCE, ""),
                service=tags.get(labels.SERVICE, ""),
                status=str(item.get("State", "")),
                exit_code=_exit_code(str(item.get("Status", ""))),
                spec_hash=tags.get(labels.SPEC_HASH, ""),
                project_dir=tags.get(labels.PROJECT_DIR, ""),
                published=tuple(
                    int(p["PublicPort"]) for p in item.get("Ports") or () if p.get("PublicPort")
                ),
                version=tags.get(labels.VERSION, ""),
                image=str(item.get("Image", "")),
            )
        )
    return found


def _exit_code(status: str) -> int | None:
    # "Exited (137) 3 seconds ago"
    if status.startswith("Exited (") and ")" in status:
        with contextlib.suppress(ValueError):
            return int(status[len("Exited (") : status.index(")")])
    return None


def ensure_network(
    client: docker.DockerClient, name: str, network_labels: dict[str, str]
) -> tuple[Network, bool]:
    """The project network, created if missing: ``(network, created)``."""
    with docker_errors(f"creating the network {name}"):
        existing = client.networks.list(names=[name])
        created = False
        match = next((n for n in existing if n.name == name), None)
        if match is None:
            match = client.networks.create(name, driver="bridge", labels=network_labels)
            created = True
        match.reload()
    owner = (match.attrs.get("Labels") or {}).get(labels.PROJECT_DIR)
    if owner != network_labels[labels.PROJECT_DIR]:
        raise UsageError(
            f"a Docker network named {name} exists and is not this project's "
            f"({'made by ' + owner if owner else 'devmesh did not make it'})",
            "remove it, or give this project another `name:` in devmesh.yaml",
        )
    configs = (match.attrs.get("IPAM") or {}).get("Config") or []
    config = next((c for c in configs if c.get("Gateway") and ":" not in c["Gateway"]), None)
    if config is None:
        raise DevmeshError(
            f"the Docker network {name} has no IPv4 gateway address",
            f"remove it (`docker network rm {name}`) and run `devmesh up` again",
        )
    return Network(name, str(config["Gateway"]), str(config.get("Subnet", ""))), created


def remove_networks(client: docker.DockerClient, project_dir: str) -> list[str]:
    """Remove the project's networks, first disconnecting containers devmesh did not make
    (a debugging container someone ran on it): those are left running."""
    removed = []
    with docker_errors("removing the project's network"):
        for network in client.networks.list(
            filters={"label": [f"{labels.PROJECT_DIR}={project_dir}"]}
        ):
            network.reload()
            for container in network.containers:
                network.disconnect(container, force=True)
            network.remove()
            removed.append(str(network.name))
    return removed


def create(client: docker.DockerClient, spec: ContainerSpec) -> None:
    """Create and start the container of ``spec``."""
    api = client.api
    with docker_errors(f"starting the container {spec.name}", _start_hint(spec)):
        host_config = api.create_host_config(
            network_mode=f"container:{spec.join}" if spec.join else spec.network,
            port_bindings={p: ("127.0.0.1", h) for p, h in spec.ports.items()} or None,
            cap_add=list(spec.cap_add) or None,
            init=spec.init or None,
        )
        networking = None
        if spec.network is not None and spec.join is None:
            endpoint = api.create_endpoint_config(aliases=list(spec.aliases) or None)
            # The stubs say one EndpointConfig; the API takes one per network, by name.
            networking = api.create_networking_config({spec.network: endpoint})  # type: ignore[arg-type]
        created = api.create_container(
            image=spec.image,
            command=spec.command,
            entrypoint=spec.entrypoint,
            name=spec.name,
            environment=dict(spec.env),
            labels=spec.labels(),
            user=spec.user or "",
            ports=list(spec.ports) or None,
            host_config=host_config,
            networking_config=networking,
            detach=True,
        )
        api.start(created["Id"])


def _start_hint(spec: ContainerSpec) -> str:
    if spec.ports:
        ports = ", ".join(str(h) for h in spec.ports.values())
        return f"check that nothing else holds 127.0.0.1:{ports}, then run `devmesh up` again"
    return "run `devmesh doctor` to see what is wrong"


def run_once(client: docker.DockerClient, spec: ContainerSpec) -> tuple[int, list[str]]:
    """Run a one-shot container to its end: ``(exit code, its output lines)``; removed after."""
    create(client, spec)
    try:
        with docker_errors(f"waiting for {spec.name}"):
            container = client.containers.get(spec.name)
            result = container.wait(timeout=INIT_TIMEOUT)
            output = container.logs().decode("utf-8", "replace").splitlines()
        return int(result.get("StatusCode", -1)), output
    finally:
        remove(client, [spec.name])


def stop(client: docker.DockerClient, names: list[str], timeout: int = STOP_TIMEOUT) -> None:
    """SIGTERM these containers (all at once), SIGKILL what still runs after ``timeout`` s."""

    def stop_one(name: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            client.api.stop(name, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        list(pool.map(stop_one, names))


def remove(client: docker.DockerClient, names: Iterable[str]) -> None:
    for name in names:
        with (
            docker_errors(f"removing the container {name}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            client.api.remove_container(name, force=True, v=True)


def logs_of(client: docker.DockerClient, name: str, lines: int = LOG_LINES) -> list[str]:
    try:
        raw = client.api.logs(name, tail=lines)
    except docker.errors.DockerException:
        return []
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text.splitlines()


def start(client: docker.DockerClient, name: str) -> None:
    """Start a stopped container again (as it was created)."""
    with docker_errors(f"starting {name} again"):
        client.api.start(name)


def restart(client: docker.DockerClient, name: str) -> None:
    with docker_errors(f"restarting {name}"):
        client.api.restart(name, timeout=STOP_TIMEOUT)


def kill(client: docker.DockerClient, name: str) -> None:
    with docker_errors(f"killing {name}"):
        client.api.kill(name)


def exec_in(client: docker.DockerClient, name: str, argv: list[str]) -> tuple[int, str]:
    with docker_errors(f"running a check in {name}"):
        exit_code, output = client.containers.get(name).exec_run(argv)
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return int(exit_code if exit_code is not None else -1), text
