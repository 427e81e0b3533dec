"""The containers a project runs as, decided without talking to Docker.

Per instance: a sidecar container that owns the network namespace (on the
project network, reachable as ``<service>``, ``<service>-<version>`` and
``<instance>``), the service container joined to that namespace, and, for
transparent interception, a short-lived init step with NET_ADMIN that installs
the redirects. One gateway container publishes the exposed ports, on
127.0.0.1 only. Each spec carries a hash of everything in it, so that ``up``
recreates only what changed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devmesh.config.model import Project
from devmesh.plan import InstanceSpec, gateway_routes, plan_instances
from devmesh.runtime.docker import labels
from devmesh.runtime.environment import proxy_env
from proxy.bootstrap import AUTO, BOOTSTRAP_ENV, TOKEN_ENV, Bootstrap, GatewayListener
from proxy.interception import PROXY_UID

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
GATEWAY_PORT_BASE = 15080
STATE_DIR = "/var/lib/devmesh"
HTTP_PORT = 80
"""Always redirected: a service calls another as ``http://catalog/`` whatever its port."""


@dataclass(frozen=True)
class ContainerSpec:
    """Everything devmesh decides about one container."""

    name: str
    role: labels.Role
    instance: str
    service: str
    version: str
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    """The project network (namespace owners), or ``None`` (joins ``join``)."""
    join: str | None = None
    """The container whose network namespace this one shares."""
    aliases: tuple[str, ...] = ()
    ports: Mapping[int, int] = field(default_factory=dict)
    """Container port -> host port, published on 127.0.0.1."""
    user: str | None = None
    cap_add: tuple[str, ...] = ()
    init: bool = False
    """Run Docker's init as PID 1, so that the service gets SIGTERM (a plain PID 1 ignores it)."""
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def spec_hash(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        return {
            **self.extra_labels,
            labels.SERVICE: self.service,
            labels.VERSION: self.version,
            labels.INSTANCE: self.instance,
            labels.ROLE: self.role,
            labels.SPEC_HASH: self.spec_hash,
        }


@dataclass(frozen=True)
class MeshSettings:
    """What every container of one ``up`` shares."""

    project_dir: str
    network: str
    sidecar_image: str
    controlplane_url: str
    token: str


def redirect_ports(project: Project) -> tuple[int, ...]:
    """The destination ports whose outbound TCP goes through the sidecar: every HTTP
    service's port, and 80. A tcp service's traffic (a database's) passes untouched."""
    ports = {HTTP_PORT} | {
        s.port for s in project.services.values() if s.port is not None and s.protocol == "http"
    }
    return tuple(sorted(ports))


def project_labels(project: Project, settings: MeshSettings) -> dict[str, str]:
    return {labels.PROJECT: project.name, labels.PROJECT_DIR: settings.project_dir}


def desired_containers(
    project: Project, images: Mapping[str, str], settings: MeshSettings
) -> list[ContainerSpec]:
    """Sidecars and services of every instance, then the gateway (if any port is exposed).

    ``images`` gives the image (an id, so a rebuilt image changes the hash) of
    each instance id.
    """
    specs: list[ContainerSpec] = []
    for instance in plan_instances(project):
        sidecar = sidecar_spec(project, instance, settings)
        specs.append(sidecar)
        specs.append(service_spec(project, instance, images[instance.id], sidecar, settings))
    gateway = gateway_spec(project, settings)
    if gateway is not None:
        specs.append(gateway)
    return specs


def _bootstrap_env(boot: Bootstrap, token: str) -> dict[str, str]:
    return {BOOTSTRAP_ENV: json.dumps(boot.to_dict(), sort_keys=True), TOKEN_ENV: token}


def sidecar_spec(project: Project, instance: InstanceSpec, settings: MeshSettings) -> ContainerSpec:
    service = project.services[instance.service]
    boot = Bootstrap(
        service=instance.service,
        version=instance.version,
        instance=instance.id,
        control_plane=settings.controlplane_url,
        token_file=None,
        state_dir=Path(STATE_DIR),
        listen_host="0.0.0.0",  # its own namespace, on the mesh network
        advertise_host=AUTO,
        inbound_port=INBOUND_PORT,
        outbound_port=OUTBOUND_PORT,
        app_port=instance.port,
        health_path=instance.health.path,
    )
    aliases = [instance.service, instance.id]
    if service.versioned:
        aliases.insert(1, f"{instance.service}-{instance.version}")
    # A tcp service's exposed port is published by the namespace owner itself.
    published = (
        {instance.port: service.expose}
        if service.protocol == "tcp" and service.expose is not None and instance.port is not None
        else {}
    )
    return ContainerSpec(
        name=labels.container_name(project.name, instance.id, "sidecar"),
        role="sidecar",
        instance=instance.id,
        service=instance.service,
        version=instance.version,
        image=settings.sidecar_image,
        env=_bootstrap_env(boot, settings.token),
        network=settings.network,
        aliases=tuple(aliases),
        ports=published,
        user=f"{PROXY_UID}:{PROXY_UID}",
        extra_labels={
            **project_labels(project, settings),
            **_interception_labels(project, instance),
        },
    )


def _interception_labels(project: Project, instance: InstanceSpec) -> dict[str, str]:
    """Part of the sidecar's hash: a change to these needs a new init step, so a new sidecar."""
    mode = project.interception_of(instance.service)
    if mode != "transparent":
        return {"devmesh.interception": mode}
    ports = ",".join(str(p) for p in redirect_ports(project))
    return {"devmesh.interception": mode, "devmesh.redirect-ports": ports}


def service_spec(
    project: Project,
    instance: InstanceSpec,
    image: str,
    sidecar: ContainerSpec,
    settings: MeshSettings,
) -> ContainerSpec:
    env = dict(instance.env)
    if instance.port is not None:
        env.setdefault("PORT", str(instance.port))  # as the local runtime gives it
    env.update(
        {
            "DEVMESH_SERVICE": instance.service,
            "DEVMESH_VERSION": instance.version,
            "DEVMESH_INSTANCE": instance.id,
        }
    )
    if project.interception_of(instance.service) == "env":
        proxy = f"http://127.0.0.1:{OUTBOUND_PORT}"
        env.update(proxy_env(proxy))
    return ContainerSpec(
        name=labels.container_name(project.name, instance.id, "service"),
        role="service",
        instance=instance.id,
        service=instance.service,
        version=instance.version,
        image=image,
        command=shlex.split(instance.command) if instance.command else None,
        env=env,
        join=sidecar.name,
        init=True,
        extra_labels={**project_labels(project, settings), "devmesh.sidecar": sidecar.spec_hash},
    )


RUST_SIDECAR_REPOSITORY = "devmesh/sidecar-rust"
"""The Rust sidecar image's repository (built by ``sidecar_image``)."""
RUST_SIDECAR_BINARY = "/usr/local/bin/devmesh-proxy"
"""Where the Rust sidecar image holds the binary (its entrypoint)."""


def is_rust_sidecar_image(image: str) -> bool:
    """Whether ``image`` (a container's image, as Docker names it) is the Rust sidecar's."""
    return image.startswith(f"{RUST_SIDECAR_REPOSITORY}:")


def init_entrypoint(sidecar_image: str) -> list[str]:
    """The init step's program in ``sidecar_image``: the Rust image's binary, else
    ``python -m proxy.interception`` (the same arguments either way)."""
    if is_rust_sidecar_image(sidecar_image):
        return [RUST_SIDECAR_BINARY, "intercept"]
    return ["python3", "-m", "proxy.interception"]


def init_spec(project: Project, sidecar: ContainerSpec, settings: MeshSettings) -> ContainerSpec:
    """The one-shot step that installs the redirects in ``sidecar``'s namespace."""
    service = project.services[sidecar.service]
    command = [
        "--outbound-port",
        str(OUTBOUND_PORT),
        "--inbound-port",
        str(INBOUND_PORT),
        "--redirect-ports",
        ",".join(str(p) for p in redirect_ports(project)),
        "--proxy-uid",
        str(PROXY_UID),
    ]
    if service.port is not None and service.protocol == "http":
        command += ["--app-port", str(service.port)]
    return ContainerSpec(
        name=labels.container_name(project.name, sidecar.instance, "init"),
        role="init",
        instance=sidecar.instance,
        service=sidecar.service,
        version=sidecar.version,
        image=settings.sidecar_image,
        entrypoint=init_entrypoint(settings.sidecar_image),
        command=command,
        join=sidecar.name,
        user="0:0",
        cap_add=("NET_ADMIN",),
        extra_labels=project_labels(project, settings),
    )


def gateway_spec(project: Project, settings: MeshSettings) -> ContainerSpec | None:
    ports = gateway_routes(project)
    if not ports:
        return None
    listeners = tuple(
        GatewayListener(GATEWAY_PORT_BASE + index, service) for index, service in enumerate(ports)
    )
    boot = Bootstrap(
        service=labels.GATEWAY,
        version="default",
        instance=labels.GATEWAY,
        control_plane=settings.controlplane_url,
        token_file=None,
        state_dir=Path(STATE_DIR),
        role="gateway",
        listen_host="0.0.0.0",  # published on the host on 127.0.0.1 only
        gateway=listeners,
    )
    return ContainerSpec(
        name=labels.container_name(project.name, labels.GATEWAY, "gateway"),
        role="gateway",
        instance=labels.GATEWAY,
        service=labels.GATEWAY,
        version="default",
        image=settings.sidecar_image,
        env=_bootstrap_env(boot, settings.token),
        network=settings.network,
        ports={listener.port: ports[listener.service] for listener in listeners},
        user=f"{PROXY_UID}:{PROXY_UID}",
        extra_labels=project_labels(project, settings),
    )
