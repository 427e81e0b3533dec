"""Pass 1 of validation: the shape of each value (types, ranges, required and unknown keys).

It builds the model as far as it can: a wrong value is reported and left at
its default, so pass 2 (cross-references, see ``validate_refs``) can still
check everything else. The model is only handed out when no problem was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from devmesh.config.model import (
    DEFAULT_MTLS,
    DEFAULT_VERSION,
    GATEWAY,
    INTERCEPTION_MODES,
    MTLS_MODES,
    PROTOCOLS,
    AuthzRule,
    Build,
    Health,
    Policy,
    Service,
    Version,
)
from devmesh.config.readers import ENV_NAME, Section, describe
from devmesh.config.report import Problems
from devmesh.config.validate_authz import read_authorization
from devmesh.config.validate_policies import read_policy

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
VERSION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
RESERVED_SERVICE = GATEWAY
MAX_REPLICAS = 20

PROJECT_KEYS = (
    "name",
    "services",
    "policies",
    "base_image",
    "interception",
    "mtls",
    "authorization",
)
EXTENSION_PREFIX = "x-"
"""Top-level keys starting with this are ignored, as in Compose: a place for YAML anchors."""
RUN_KEYS = ("command", "image", "build", "env", "replicas")
SERVICE_KEYS = (
    *RUN_KEYS,
    "port",
    "expose",
    "depends_on",
    "health",
    "versions",
    "interception",
    "protocol",
    "mtls",
)
BUILD_KEYS = ("context", "dockerfile", "args")
HEALTH_KEYS = ("path", "start_timeout")
_ADD_SERVICE_HINT = "add at least one service, e.g. `web: {command: python3 -m http.server}`"
NAME_RULE = "lowercase letters, digits and '-', starting with a letter (at most 63)"


@dataclass(frozen=True)
class RunSettings:
    """What to run, as given on a service or on one of its versions (``None``: not given)."""

    command: str | None = None
    image: str | None = None
    build: Build | None = None
    env: dict[str, str] = field(default_factory=dict)
    replicas: int | None = None

    def under(self, version: RunSettings) -> RunSettings:
        """These service settings with ``version``'s on top (``env`` merged key by key).

        ``image`` and ``build`` say together where the image comes from: a version
        that gives either replaces both of the service's.
        """
        own_image = version.image is not None or version.build is not None
        return RunSettings(
            command=version.command if version.command is not None else self.command,
            image=version.image if own_image else self.image,
            build=version.build if own_image else self.build,
            env={**self.env, **version.env},
            replicas=version.replicas if version.replicas is not None else self.replicas,
        )

    def version(self, name: str, line: int | None) -> Version:
        return Version(
            name=name,
            command=self.command,
            image=self.image,
            build=self.build,
            env=self.env,
            replicas=self.replicas if self.replicas is not None else 1,
            line=line,
        )


@dataclass
class Shape:
    """What pass 1 could read; complete only if no problem was reported."""

    name: str
    services: dict[str, Service] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    base_image: str | None = None
    interception: str = "transparent"
    mtls: str = DEFAULT_MTLS
    authorization: tuple[AuthzRule, ...] = ()
    services_known: bool = False
    """Whether ``services`` is a mapping, so its keys are every service there is."""


def suggest_name(name: str) -> str:
    """A valid name close to ``name``: ``My_Shop`` -> ``my-shop``."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    cleaned = cleaned if cleaned[:1].isalpha() else f"s-{cleaned}".rstrip("-")
    return cleaned[:63].rstrip("-")


def read_shape(problems: Problems, data: dict[str, object], default_name: str) -> Shape:
    top = Section.open(problems, data, "", "the project", allowed=None, example="services:")
    top = top or Section(problems, "", "the project")  # only None if data is not a dict
    top.check_keys(PROJECT_KEYS, ignored_prefix=EXTENSION_PREFIX)
    shape = Shape(name=_project_name(top, default_name))
    shape.base_image = top.string("base_image", example="base_image: python:3.12-slim")
    shape.interception = (
        top.choice("interception", INTERCEPTION_MODES, example="interception: env") or "transparent"
    )
    shape.mtls = top.choice("mtls", MTLS_MODES, example="mtls: strict") or DEFAULT_MTLS
    _read_services(top, shape)
    shape.authorization = read_authorization(top)
    policies = top.mapping(
        "policies", "policies", allowed=None, example="policies: {catalog: {timeout: 2s}}"
    )
    if policies is not None:
        for name, raw in policies.data.items():
            shape.policies[name] = read_policy(policies, name, raw)
    return shape


def _read_services(top: Section, shape: Shape) -> None:
    if "services" not in top.data:
        top.missing("services", "services: {web: {command: python3 -m http.server}}")
        return
    raw_services = top.get("services")
    if raw_services is not None and not isinstance(raw_services, dict):
        top.wrong(
            "services",
            "services must be a mapping of service names to settings, "
            f"not {describe(raw_services)}",
            "write each service name on its own indented line below `services:`",
        )
        return
    services = top.mapping("services", "services", allowed=None, example="services:")
    if services is None or not services.data:
        top.wrong("services", "services is empty", _ADD_SERVICE_HINT)
        return
    shape.services_known = True
    for name, raw in services.data.items():
        shape.services[name] = _service(top.problems, name, raw)


def _project_name(top: Section, default_name: str) -> str:
    given = top.get("name")
    if given is None:
        if not NAME.match(default_name):
            top.wrong(
                "name",
                f"the project has no name, and '{default_name}' is not a valid one",
                f"add `name: {suggest_name(default_name) or 'shop'}`",
            )
        return default_name
    name = top.string("name", example="name: shop")
    if name is not None and not NAME.match(name):
        top.wrong(
            "name",
            f"project name '{name}' is not valid",
            f"use {NAME_RULE}, e.g. `name: {suggest_name(name) or 'shop'}`",
        )
    return name if name is not None else default_name


def _check_service_name(problems: Problems, path: str, name: str) -> None:
    if name == RESERVED_SERVICE:
        problems.add(
            path,
            "the service name 'ingress' is reserved for devmesh's gateway",
            "rename the service, e.g. to 'gateway' or 'web'",
        )
    elif not NAME.match(name):
        problems.add(
            path,
            f"service name '{name}' is not valid",
            f"use {NAME_RULE}, e.g. '{suggest_name(name) or 'web'}'",
        )


def _service(problems: Problems, name: str, raw: object) -> Service:
    path = f"services.{name}"
    _check_service_name(problems, path, name)
    line = problems.lines.get(path) if problems.lines is not None else None
    section = Section.open(
        problems,
        raw,
        path,
        f"service {name}",
        allowed=SERVICE_KEYS,
        example="command: python3 app.py",
    )
    if section is None:
        return Service(name=name, versions=(RunSettings().version(DEFAULT_VERSION, line),))
    base = _run_settings(section)
    return Service(
        name=name,
        versions=_versions(section, name, base, line),
        port=section.integer("port", 1, 65535, example="port: 8080"),
        expose=section.integer("expose", 1, 65535, example="expose: 8080"),
        depends_on=_depends_on(section),
        health=_health(section, name),
        interception=section.choice(
            "interception", INTERCEPTION_MODES, example="interception: env"
        ),
        protocol=section.choice("protocol", PROTOCOLS, example="protocol: tcp") or "http",
        mtls=section.choice("mtls", MTLS_MODES, example="mtls: strict"),
        line=line,
    )


def _run_settings(section: Section) -> RunSettings:
    return RunSettings(
        command=section.string("command", example="command: python3 app.py"),
        image=section.string("image", example="image: shop/catalog:dev"),
        build=_build(section),
        env=section.text_map("env", names=ENV_NAME, example="env: {LOG_LEVEL: debug}"),
        replicas=section.integer("replicas", 1, MAX_REPLICAS, example="replicas: 2"),
    )


def _build(section: Section) -> Build | None:
    value = section.get("build")
    if value is None or isinstance(value, str):
        context = section.string("build", example="build: ./catalog")
        return Build(context=context) if context is not None else None
    if not isinstance(value, dict):
        section.wrong(
            "build",
            f"build of {section.owner} must be a folder or a mapping, not {describe(value)}",
            "write the folder to build, e.g. `build: ./catalog`",
        )
        return None
    build = section.mapping(
        "build",
        f"the build of {section.owner}",
        allowed=BUILD_KEYS,
        example="build: {context: ./catalog, dockerfile: Dockerfile}",
    )
    if build is None:
        return None
    context = build.string("context", example="context: ./catalog", required=True)
    dockerfile = build.string("dockerfile", example="dockerfile: Dockerfile.dev")
    args = build.text_map("args", names=None, example="args: {PYTHON_VERSION: '3.12'}")
    return Build(context=context or ".", dockerfile=dockerfile, args=args)


def _depends_on(section: Section) -> tuple[str, ...]:
    value = section.get("depends_on")
    if isinstance(value, dict):
        listed = ", ".join(str(key) for key in value) or "db"
        section.wrong(
            "depends_on",
            f"depends_on of {section.owner} must be a list of service names, not a mapping",
            f"write it as a list: `depends_on: [{listed}]` (devmesh waits for health checks)",
        )
        return ()
    names = section.strings("depends_on", example="depends_on: [catalog, db]")
    if names is None:
        return ()
    seen: set[str] = set()
    for index, dependency in enumerate(names):
        if dependency in seen:
            section.problems.add(
                f"{section.at('depends_on')}[{index}]",
                f"{section.owner} lists '{dependency}' twice in depends_on",
                "remove the repeated name",
            )
        seen.add(dependency)
    return tuple(names)


def _health(section: Section, service: str) -> Health:
    health = section.mapping(
        "health",
        f"the health check of {service}",
        allowed=HEALTH_KEYS,
        example="health: {path: /healthz}",
    )
    if health is None:
        return Health()
    path = health.string("path", example="path: /healthz")
    if path is not None and not path.startswith("/"):
        health.wrong(
            "path",
            f"path of {health.owner} must start with '/', not '{path}'",
            f"write it like `path: /{path.lstrip('./')}`",
        )
        path = None
    timeout = health.duration("start_timeout", example="start_timeout: 30s")
    return Health(
        path=path, start_timeout=timeout if timeout is not None else Health().start_timeout
    )


_VERSION_MISPLACED = {
    key: f"`{key}:` applies to the whole service: move it up, next to `versions:`"
    for key in ("port", "expose", "depends_on", "health", "versions", "interception", "protocol")
}


def _versions(
    section: Section, service: str, base: RunSettings, line: int | None
) -> tuple[Version, ...]:
    default = (base.version(DEFAULT_VERSION, line),)
    versions = section.mapping(
        "versions",
        f"the versions of {service}",
        allowed=None,
        example="versions: {v1: {command: python3 app.py}}",
    )
    if versions is None:
        return default
    if not versions.data:
        section.wrong(
            "versions",
            f"versions of service {service} is empty",
            "add at least one version, e.g. `v1: {command: python3 app.py}`, or remove `versions:`",
        )
        return default
    resolved = []
    for name, raw in versions.data.items():
        path = versions.at(name)
        _check_version_name(section.problems, path, name, service)
        own = Section.open(
            section.problems,
            raw,
            path,
            f"version {name} of {service}",
            allowed=RUN_KEYS,
            example="command: python3 app.py",
            misplaced=_VERSION_MISPLACED,
        )
        settings = _run_settings(own) if own is not None else RunSettings()
        lines = section.problems.lines
        version_line = lines.get(path, line) if lines is not None else None
        resolved.append(base.under(settings).version(name, version_line))
    return tuple(resolved)


def _check_version_name(problems: Problems, path: str, name: str, service: str) -> None:
    if name == DEFAULT_VERSION:
        problems.add(
            path,
            f"the version name 'default' of {service} is reserved",
            "name it after what it is, e.g. 'v1' or 'stable'",
        )
    elif not VERSION_NAME.match(name):
        suggestion = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:31] or "v1"
        problems.add(
            path,
            f"version name '{name}' of {service} is not valid",
            "use lowercase letters, digits and '-', starting with a letter or digit "
            f"(at most 31), e.g. '{suggestion}'",
        )
