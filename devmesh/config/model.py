"""The typed project model that a validated ``devmesh.yaml`` becomes.

Everything downstream (runtimes, control plane, CLI) works on these objects,
never on raw YAML. They are immutable: a changed config is a new ``Project``.

Versions are always resolved here: a service without ``versions:`` has exactly
one version named ``default``; a service with versions has one ``Version``
per entry, with the service-level ``command``/``image``/``build``/``env``/
``replicas`` already merged in (version keys win, ``env`` is merged key by key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VERSION = "default"
"""The version name of a service that declares no ``versions:``."""

RETRY_ON_VALUES = ("5xx", "gateway-error", "reset", "connect-failure")
PROTOCOLS = ("http", "tcp")
"""What a service speaks: ``http`` is routed, counted and shaped by the mesh; ``tcp``
(a database, a broker) is run and health-checked, and its traffic passes untouched."""
RESERVED_PORTS = range(15000, 15100)
"""Ports the sidecar uses in an instance's network namespace (as Istio reserves 15000-15090)."""
INTERCEPTION_MODES = ("transparent", "env")
"""How the Docker runtime sends a service's calls through its sidecar: iptables
redirects (no change to the service), or ``HTTP_PROXY`` (no NET_ADMIN needed)."""
MTLS_MODES = ("strict", "permissive", "off")
"""Between sidecars: ``strict`` lets in only mTLS from a mesh identity, ``permissive``
mTLS or plaintext (callers in the mesh use mTLS), ``off`` plaintext only."""
DEFAULT_MTLS = "permissive"
AUTHZ_ACTIONS = ("allow", "deny")
AUTHZ_MODES = ("enforce", "audit")
ANY_SOURCE = "*"
"""In an authorization rule's ``from``: any caller with a mesh identity."""
GATEWAY = "ingress"
"""The gateway's name: its instance's, the source of the calls it lets into the mesh (and its
identity's), and so a name no service may take."""
DEFAULT_BASE_IMAGE = "python:3.12-slim"
"""The Python image the sidecar image is built on, unless the project or a flag says otherwise."""


@dataclass(frozen=True)
class Build:
    """How to build a service's image (Docker runtime)."""

    context: str
    dockerfile: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    """How the sidecar decides its instance is ready.

    With a ``path``, an HTTP GET on the instance must answer below 500; without
    one, a TCP connect to the instance's port must succeed; a service with no
    ``port`` is ready as soon as its sidecar is.
    """

    path: str | None = None
    start_timeout: float = 30.0


@dataclass(frozen=True)
class Version:
    """One named version of a service, with service-level settings merged in."""

    name: str
    command: str | None = None
    image: str | None = None
    build: Build | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: int = 1
    line: int | None = None
    """Line of this version's entry in the source file (the service's line if unversioned)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 2
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ("5xx", "connect-failure")


@dataclass(frozen=True)
class BreakerPolicy:
    """Outlier detection, with Envoy's defaults and meaning."""

    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    panic_threshold: float = 50.0
    """Below this percent of a pool healthy, callers route to all of it (Envoy's
    ``healthy_panic_threshold``); 0 never does."""


LB_POLICIES = ("round-robin", "least-request")


@dataclass(frozen=True)
class PoolPolicy:
    """Connection-pool limits of a caller towards a service, Envoy's defaults."""

    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True)
class FaultMatch:
    """Which requests a fault applies to (all of these must hold; none given: every request)."""

    path: str | None = None
    """A path prefix."""
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    """The calling service."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault, Istio's shape: a delay and an abort, each with its own percentage, plus
    Toxiproxy-like connection faults (a bandwidth limit on the response, a hang)."""

    delay: float | None = None
    jitter: float = 0.0
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_reset: bool = False
    abort_percent: float = 100.0
    bandwidth: int | None = None
    """Bytes per second."""
    hang: float | None = None
    match: FaultMatch = field(default_factory=FaultMatch)


@dataclass(frozen=True)
class Policy:
    """Traffic policy for calls *to* one service."""

    timeout: float | None = None
    retries: RetryPolicy | None = None
    breaker: BreakerPolicy | None = None
    split: Mapping[str, float] | None = None
    """Weight (0-100, summing to 100) per version name."""
    lb: str | None = None
    """``round-robin`` (the default) or ``least-request``."""
    pool: PoolPolicy | None = None
    faults: tuple[FaultSpec, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """An authorization policy for calls to one service (Istio's ``AuthorizationPolicy``).

    It matches a request when each of ``sources``, ``paths`` and ``methods`` it gives
    has a value that matches; ``deny`` rules are judged first, and with any ``allow``
    rule on a service only what one allows gets in. ``audit``: reported, not enforced.
    """

    name: str
    service: str
    action: str
    mode: str = "enforce"
    sources: tuple[str, ...] = ()
    """Calling services by name, or ``*`` (any mesh identity)."""
    paths: tuple[str, ...] = ()
    """Exact, ``/prefix/*``, ``*.suffix`` or ``*``."""
    methods: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    versions: tuple[Version, ...]
    port: int | None = None
    """The port the service listens on inside its container (the local runtime assigns its own)."""
    expose: int | None = None
    """Host port on 127.0.0.1 where the service is reachable from outside the mesh."""
    depends_on: tuple[str, ...] = ()
    health: Health = field(default_factory=Health)
    interception: str | None = None
    """``transparent`` or ``env`` for this service; ``None``: the project's setting."""
    protocol: str = "http"
    mtls: str | None = None
    """This service's mTLS mode; ``None``: the project's."""
    line: int | None = None

    @property
    def versioned(self) -> bool:
        return not (len(self.versions) == 1 and self.versions[0].name == DEFAULT_VERSION)

    def version(self, name: str) -> Version | None:
        return next((v for v in self.versions if v.name == name), None)


@dataclass(frozen=True)
class Project:
    name: str
    services: Mapping[str, Service]
    """Services in the order the file declares them."""
    policies: Mapping[str, Policy] = field(default_factory=dict)
    base_image: str | None = None
    """The Python image to build the sidecar on (Docker runtime); ``None``: the default."""
    interception: str = "transparent"
    """The project-wide interception mode; a service may override it."""
    mtls: str = DEFAULT_MTLS
    """The mesh-wide mTLS mode; a service may override it."""
    authorization: tuple[AuthzRule, ...] = ()
    source: Path | None = None
    """The file this project was loaded from, if any."""
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    """Line in ``source`` of each dotted path (``services.web.expose``), when loaded from a file."""

    def policy(self, service: str) -> Policy:
        return self.policies.get(service, Policy())

    def interception_of(self, service: str) -> str:
        own = self.services[service].interception
        return own if own is not None else self.interception

    def mtls_of(self, service: str) -> str:
        own = self.services[service].mtls
        return own if own is not None else self.mtls

    def where(self, *paths: str) -> str:
        """``devmesh.yaml:12``: the place of the first of ``paths`` the file has a line for.

        Give the most precise path first (``services.web.expose``, ``services.web``).
        """
        name = self.source.name if self.source is not None else "devmesh.yaml"
        line = next((self.lines[p] for p in paths if p in self.lines), None)
        return f"{name}:{line}" if line is not None else name
