"""A docker-compose file as devmesh config: what it amounts to, and what devmesh leaves out.

``compose_to_config`` is pure: it turns the loaded Compose data into the dict a
``devmesh.yaml`` would hold, plus one warning per Compose setting devmesh does
not support (nothing is dropped silently) and the problems that make the file
unusable. A key Compose does not know either is such a problem, as it is for
Compose, with the key it is likely a typo of (see ``compose_keys``). Values are
interpolated as Compose does (``$VAR``, ``${VAR:-default}``, ``$$``). A service
name devmesh cannot use is an error, not a rename: other services call it by
that name. ``compose_project`` validates the result like any ``devmesh.yaml``,
reporting the conversion's problems and the validation's at once, at the
compose file's own paths and in its own words (``ports:``, not ``expose:``).
``import_compose`` reads the file (and ``.env`` beside it) and converts it;
``load_compose`` also validates it; ``render_devmesh_yaml`` writes it out for
``devmesh init --from``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from devmesh.config.compose_keys import (
    BUILD_KEYS,
    DEPENDENCY_KEYS,
    DEPLOY_KEYS,
    PORT_KEYS,
    SERVICE_KEYS,
    TOP_KEYS,
)
from devmesh.config.compose_syntax import (
    LONG_PORT_KEYS,
    PortEntry,
    interpolate,
    parse_expose,
    parse_port,
    read_dotenv,
)
from devmesh.config.loader import default_project_name
from devmesh.config.model import Project
from devmesh.config.protocols import not_http
from devmesh.config.readers import describe
from devmesh.config.report import Origin, Wording, did_you_mean, parent_path
from devmesh.config.validate import parse_project
from devmesh.config.validate_shape import EXTENSION_PREFIX, NAME, NAME_RULE, suggest_name
from devmesh.config.yamlsource import load_yaml, path_item, path_join
from devmesh.errors import ConfigError, Problem, UsageError

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
"""Compose's own order of preference."""

_SILENT_TOP = ("name", "services", "version")

_RUN_KEYS = ("image", "build", "command", "environment")
_USED_SERVICE_KEYS = (*_RUN_KEYS, "depends_on", "ports", "expose", "deploy", "scale")
_USED_BUILD_KEYS = ("context", "dockerfile", "args")
_READY_CONDITIONS = ("service_started", "service_healthy")
_LOOPBACK = ("127.0.0.1", "localhost")
_HINTS = {
    "healthcheck": "devmesh checks readiness itself; for an HTTP check "
    "add `health: {path: /healthz}` to the service in devmesh.yaml",
    "env_file": "copy its variables into `environment:`",
    "networks": "services reach each other by name through the mesh",
    "network_mode": "services reach each other by name through the mesh",
    "links": "services reach each other by name through the mesh",
    "profiles": "devmesh runs every service, whatever its profiles",
}
COMPOSE_WORDING = Wording(
    other_host_port="another host port in `ports:`",
    no_host_port="leave the host port out of its `ports:` entry",
    examples={"replicas": "deploy: {replicas: 2}"},
)
"""Hints about a compose file name its keys: a host port is given in ``ports:``."""


@dataclass(frozen=True)
class Imported:
    """A compose file as devmesh config, what devmesh left out of it, and what is wrong in it."""

    data: dict[str, object]
    """Config-shaped: exactly what a ``devmesh.yaml`` would hold."""
    warnings: list[str]
    """One sentence each: ``docker-compose.yml:12: services.db.volumes is not supported ...``."""
    lines: dict[str, int] = field(default_factory=dict)
    """Line in the compose file of each dotted path of ``data`` (``services.web.port``)."""
    paths: dict[str, str] = field(default_factory=dict)
    """The compose file's path of each dotted path of ``data`` (``services.web.ports[0]``)."""
    problems: list[Problem] = field(default_factory=list)
    """What makes the file unusable, found while converting it (``compose_project`` raises them)."""


def find_compose(directory: Path) -> Path | None:
    """The compose file Compose itself would pick in ``directory``, if any."""
    return next((directory / n for n in COMPOSE_NAMES if (directory / n).is_file()), None)


def compose_to_config(
    data: object,
    *,
    file: Path,
    lines: Mapping[str, int] | None = None,
    environ: Mapping[str, str] | None = None,
    default_name: str,
) -> Imported:
    """The devmesh config of the Compose ``data`` read from ``file``, with its problems if any.

    ``lines`` maps Compose dotted paths to lines (see ``yamlsource``); ``environ``
    holds the variables for interpolation (none when not given).
    """
    converter = _Converter(file, lines or {}, environ or {})
    result = converter.project(data, default_name)
    warnings = [text for _, text in sorted(converter.warnings, key=lambda pair: pair[0])]
    return Imported(
        data=result,
        warnings=warnings,
        lines=converter.out_lines,
        paths=converter.out_paths,
        problems=converter.problems,
    )


def compose_project(imported: Imported, file: Path) -> Project:
    """The project of a converted compose ``file``; ``ConfigError`` listing every problem.

    The conversion's problems and the validation's come together, ordered by line,
    each at the compose file's path and with hints in its keys.
    """
    origin = Origin(problems=imported.problems, paths=imported.paths, wording=COMPOSE_WORDING)
    return parse_project(imported.data, file=file, lines=imported.lines, origin=origin)


def import_compose(path: Path, *, default_name: str | None = None) -> Imported:
    """Read the compose file at ``path`` and convert it (not yet validated as devmesh config).

    Variables come from the shell, then from ``.env`` beside the file. Without a
    top-level ``name``, the project is named ``default_name`` (by default, the folder's).
    """
    document = load_yaml(_read_text(path), file=path)
    dotenv, dotenv_warnings = read_dotenv(path.parent / ".env")
    imported = compose_to_config(
        document.data,
        file=path,
        lines=document.lines,
        environ={**dotenv, **os.environ},
        default_name=default_name if default_name is not None else default_project_name(path),
    )
    return replace(imported, warnings=[*dotenv_warnings, *imported.warnings])


def load_compose(path: Path, *, default_name: str | None = None) -> tuple[Project, list[str]]:
    """Read, convert and validate the compose file at ``path``: the project and the warnings.

    The project's ``source`` is the compose file, and its ``lines`` point into it.
    """
    imported = import_compose(path, default_name=default_name)
    try:
        return compose_project(imported, path), imported.warnings
    except ConfigError as exc:
        exc.warnings = imported.warnings
        raise


def render_devmesh_yaml(imported: Imported, source: Path) -> str:
    """The text of the ``devmesh.yaml`` equivalent to ``imported`` (read from ``source``)."""
    header = [f"# Generated by devmesh from {source}."]
    if imported.warnings:
        header.append("# What devmesh left out or changed on the way:")
        header += ["# " + " ".join(warning.splitlines()) for warning in imported.warnings]
    chunks = []  # one per top-level key and per service, with a blank line between them
    for key, value in imported.data.items():
        if key == "services" and isinstance(value, dict) and value:
            services = [_dump({key: {n: s}}).partition("\n")[2] for n, s in value.items()]
            chunks.append(f"{key}:\n" + "\n".join(services))
        else:
            chunks.append(_dump({key: value}))
    return "\n".join(header) + "\n\n" + "\n".join(chunks)


def _dump(data: dict[str, object]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)


def _read_text(path: Path) -> str:
    hint = "pass the path of a docker-compose.yml"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"the compose file {path} does not exist", hint) from None
    except OSError as exc:
        raise UsageError(
            f"the compose file {path} cannot be read: {exc.strerror or exc}", hint
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problem = Problem("", "the file is not UTF-8 text", "save it as UTF-8", path, line)
        raise ConfigError([problem]) from None


@dataclass
class _Converter:
    file: Path
    lines: Mapping[str, int]
    environ: Mapping[str, str]
    warnings: list[tuple[int, str]] = field(default_factory=list)
    """(line, text): the text, and its line to put the warnings in file order."""
    problems: list[Problem] = field(default_factory=list)
    out_lines: dict[str, int] = field(default_factory=dict)
    out_paths: dict[str, str] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        while path not in self.lines and path:
            path = parent_path(path)
        return self.lines.get(path)

    def warn(self, path: str, what: str, hint: str | None = None) -> None:
        line = self.line(path)
        where = f"{self.file.name}:{line}" if line is not None else self.file.name
        text = f"{where}: {path} {what}" + (f" — {hint}" if hint else "")
        self.warnings.append((line or 0, text))

    def unsupported(self, path: str, hint: str | None = None) -> None:
        self.warn(path, "is not supported by devmesh and is ignored", hint)

    def problem(self, path: str, message: str, hint: str) -> None:
        self.problems.append(Problem(path, message, hint, self.file, self.line(path)))

    def check_keys(
        self,
        mapping: Mapping[object, object],
        path: str,
        known: frozenset[str],
        owner: str,
        used: tuple[str, ...] = (),
    ) -> None:
        """A warning for each key Compose knows devmesh does not use, an error for the others.

        ``known``: Compose's keys in ``mapping`` (at ``path``, named ``owner`` in
        messages); ``used``: those devmesh reads. Extensions (``x-...``) pass silently.
        """
        for raw_key in mapping:
            key = str(raw_key)
            if key in used or key.startswith(EXTENSION_PREFIX):
                continue
            at = path_join(path, key)
            if key in known:
                self.unsupported(at, _HINTS.get(key))
            else:
                otherwise = f"Compose knows no such key in {owner} either: check its spelling"
                hint = did_you_mean(key, sorted(known), otherwise)
                self.problem(at, f"unknown key '{key}' in {owner}", hint)

    def mark(self, out_path: str, in_path: str) -> None:
        """Record that ``out_path`` of the config comes from ``in_path`` of the compose file."""
        self.out_paths[out_path] = in_path
        line = self.line(in_path)
        if line is not None:
            self.out_lines[out_path] = line

    def project(self, data: object, default_name: str) -> dict[str, object]:
        if not isinstance(data, dict):
            self.problem("", f"a compose file must be a mapping, not {describe(data)}", _SVC_HINT)
            return {}
        self.check_keys(data, "", TOP_KEYS, "the compose file", _SILENT_TOP)
        self.mark("", "")
        result: dict[str, object] = {"name": self._name(data.get("name"), default_name)}
        services = data.get("services")
        if not isinstance(services, dict) or not services:
            message = (
                f"services must be a mapping of service names to settings, not {describe(services)}"
                if services and not isinstance(services, dict)
                else "the compose file has no services"
            )
            self.problem("services", message, _SVC_HINT)
            return result
        self.mark("services", "services")
        converted: dict[str, object] = {}
        for name, raw in services.items():
            path = f"services.{name}"
            if not NAME.match(str(name)):
                self.problem(
                    path,
                    f"service name '{name}' cannot be used by devmesh",
                    f"rename it in the compose file, e.g. '{suggest_name(str(name)) or 'web'}', "
                    f"and wherever other services call it; devmesh names are {NAME_RULE}",
                )
            self.mark(path, path)
            converted[str(name)] = self.service(str(name), raw, path)
        result["services"] = converted
        return result

    def _name(self, given: object, default_name: str) -> object:
        if given is None:
            return default_name
        name = self.interpolate(given, "name")
        if isinstance(name, str) and not NAME.match(name) and NAME.match(suggest_name(name)):
            self.warn(
                "name",
                f"'{name}' is not a valid devmesh project name: it becomes '{suggest_name(name)}'",
            )
            name = suggest_name(name)
        self.mark("name", "name")
        return name

    def service(self, name: str, raw: object, path: str) -> dict[str, object]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(
                path,
                f"service {name} must be a mapping, not {describe(raw)}",
                "write its settings on indented lines below it, e.g. `image: nginx`",
            )
            return {}
        self.check_keys(raw, path, SERVICE_KEYS, f"service {name}", _USED_SERVICE_KEYS)
        raw = {
            k: self.interpolate(v, f"{path}.{k}") for k, v in raw.items() if k in _USED_SERVICE_KEYS
        }
        out: dict[str, object] = {}
        for key in _RUN_KEYS:
            if raw.get(key) is None:
                continue
            target = "env" if key == "environment" else key
            self.mark(f"{path}.{target}", f"{path}.{key}")
            if key == "build":
                out["build"] = self.build(raw["build"], f"{path}.build")
            elif key == "command" and isinstance(command := raw[key], list):
                out["command"] = shlex.join(str(part) for part in command)
            elif key == "environment":
                out["env"] = self.pairs(raw[key], f"{path}.environment", f"{path}.env")
            else:
                out[key] = raw[key]
        self.ports(raw, path, out)
        self.protocol(name, path, out)
        if raw.get("depends_on") is not None:
            self.mark(f"{path}.depends_on", f"{path}.depends_on")
            out["depends_on"] = self.depends_on(raw["depends_on"], path)
        self.replicas(raw, path, out)
        return out

    def build(self, value: object, path: str) -> object:
        if not isinstance(value, dict):
            return value
        owner = f"the build of {path.removeprefix('services.').removesuffix('.build')}"
        self.check_keys(value, path, BUILD_KEYS, owner, _USED_BUILD_KEYS)
        build: dict[str, object] = {"context": value.get("context") or "."}
        if value.get("dockerfile") is not None:
            build["dockerfile"] = value["dockerfile"]
        if value.get("args") is not None:
            build["args"] = self.pairs(value["args"], f"{path}.args", f"{path}.args")
        return build

    def pairs(self, value: object, path: str, out_path: str) -> object:
        """``environment`` or ``build.args``: a mapping, or ``K=V`` items (``K`` alone: environ)."""
        if isinstance(value, dict):
            items = [(str(k), v, path_join(path, str(k))) for k, v in value.items()]
        elif isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                key, sep, text = str(item).partition("=")
                items.append((key, text if sep else None, path_item(path, index)))
        else:
            owner, _, what = path.removeprefix("services.").partition(".")
            key = what.rpartition(".")[2]
            self.problem(
                path,
                f"{what} of service {owner} must be a mapping or a list, not {describe(value)}",
                f"write it like `{key}: {{MODE: dev}}` or `{key}: [MODE=dev]`",
            )
            return {}
        result: dict[str, object] = {}
        for key, item, item_path in items:
            if item is None and key not in self.environ:
                self.warn(
                    item_path,
                    f"gives {key} no value and {key} is not set, so it is left out",
                    f"set {key} in the environment or in .env next to {self.file.name}",
                )
                continue
            item = self.environ[key] if item is None else item
            result[key] = str(item).lower() if isinstance(item, bool) else item
            self.mark(path_join(out_path, key), item_path)
        return result

    def depends_on(self, value: object, path: str) -> object:
        if not isinstance(value, dict):
            if isinstance(value, list):
                for index in range(len(value)):
                    self.mark(f"{path}.depends_on[{index}]", f"{path}.depends_on[{index}]")
            return value
        for index, (dependency, spec) in enumerate(value.items()):
            at = f"{path}.depends_on.{dependency}"
            self.mark(f"{path}.depends_on[{index}]", at)
            spec = spec if isinstance(spec, dict) else {}
            owner = f"the dependency of {path.removeprefix('services.')} on {dependency}"
            self.check_keys(spec, at, DEPENDENCY_KEYS, owner, ("condition",))
            if "condition" in spec and spec["condition"] not in _READY_CONDITIONS:
                self.warn(
                    f"{at}.condition",
                    f"is {spec['condition']}, which devmesh does not support",
                    f"devmesh starts {path.removeprefix('services.')} once {dependency} "
                    "is ready instead",
                )
        return [str(dependency) for dependency in value]

    def ports(self, raw: dict[str, object], path: str, out: dict[str, object]) -> None:
        """The first usable ``ports`` entry (else ``expose``) gives ``port`` and ``expose``."""
        for key, parse in (("ports", parse_port), ("expose", parse_expose)):
            entries = raw.get(key)
            if entries is not None and not isinstance(entries, list):
                self.problem(
                    f"{path}.{key}",
                    f"{key} of service {path.removeprefix('services.')} must be a list, "
                    f"not {describe(entries)}",
                    f'write it like `{key}: ["8000"]`',
                )
                continue
            for index, entry in enumerate(entries or []):
                at = path_item(f"{path}.{key}", index)
                port = parse(entry)
                if port is None:
                    self.problem(
                        at,
                        f"{entry!r} is not a port entry devmesh understands",
                        _PORT_HINTS[key],
                    )
                    continue
                if isinstance(entry, dict):
                    owner = f"port entry {index + 1} of {path.removeprefix('services.')}"
                    self.check_keys(entry, at, PORT_KEYS, owner, LONG_PORT_KEYS)
                if "port" in out and (key == "ports" or port.target != str(out["port"])):
                    self.warn(
                        at,
                        f"is ignored: devmesh gives each service one port (here {out['port']}) "
                        "and exposes at most that one on the host",
                    )
                elif port.protocol != "tcp":
                    self.warn(
                        at,
                        f"is a {port.protocol} port, which devmesh does not carry, and is ignored",
                        "the mesh routes HTTP over TCP",
                    )
                elif port.is_range:
                    self.warn(at, "is a port range, which devmesh does not support, and is ignored")
                elif "port" not in out:
                    self._use_port(out, path, at, port)

    def _use_port(self, out: dict[str, object], path: str, at: str, port: PortEntry) -> None:
        out["port"] = int(port.target)
        self.mark(f"{path}.port", at)
        if port.published:
            out["expose"] = int(port.published)
            self.mark(f"{path}.expose", at)
        elif at.startswith(f"{path}.ports"):
            self.warn(
                at,
                "has no host port, so devmesh does not expose the service on the host",
                "add `expose: <host port>` to it in devmesh.yaml to reach it from the host",
            )
        if port.host_ip is not None and port.host_ip.strip("[]") not in _LOOPBACK:
            self.warn(
                at,
                f"binds to {port.host_ip or 'every address'}, "
                "but devmesh binds exposed ports to 127.0.0.1 only",
            )

    def protocol(self, name: str, path: str, out: dict[str, object]) -> None:
        """A database or broker (by its port or image) speaks tcp, not HTTP: say so."""
        port, image = out.get("port"), out.get("image")
        known = not_http(port if isinstance(port, int) else None, str(image or ""))
        if known is None:
            return
        out["protocol"] = "tcp"
        self.mark(f"{path}.protocol", path)
        self.warn(
            path,
            f"looks like {known} (not HTTP), so devmesh runs {name} with `protocol: tcp`: "
            "its traffic passes through the mesh untouched and uncounted",
            "set `protocol: http` for it in devmesh.yaml if it speaks HTTP",
        )

    def replicas(self, raw: dict[str, object], path: str, out: dict[str, object]) -> None:
        deploy, given = raw.get("deploy"), []
        if isinstance(deploy, dict):
            owner = f"the deploy of {path.removeprefix('services.')}"
            self.check_keys(deploy, f"{path}.deploy", DEPLOY_KEYS, owner, ("replicas",))
            if deploy.get("replicas") is not None:
                given.append(("deploy.replicas", deploy["replicas"]))
        elif deploy is not None:
            self.unsupported(f"{path}.deploy")
        if raw.get("scale") is not None:
            given.append(("scale", raw["scale"]))
        if not given:
            return
        (key, value), *others = given
        for other, _ in others:
            self.warn(f"{path}.{other}", "is ignored: deploy.replicas gives the replicas")
        out["replicas"] = int(value) if isinstance(value, str) and value.isdecimal() else value
        self.mark(f"{path}.replicas", f"{path}.{key}")

    def interpolate(self, value: object, path: str) -> object:
        result, findings = interpolate(value, path, self.environ)
        for finding in findings:
            hint = (
                f"set {finding.variable} in the environment or in .env next to {self.file.name}"
                if finding.variable
                else "write ${NAME}, ${NAME:-default} or ${NAME-default}, and $$ for a literal $"
            )
            if finding.error:
                self.problem(finding.path, f"the value {finding.message}", hint)
            else:
                self.warn(finding.path, finding.message, hint)
        return result


_PORT_HINTS = {
    "ports": 'write it like "8080:8000", "8000" or {target: 8000, published: 8080} '
    "(ports from 1 to 65535)",
    "expose": 'write it like "8000" or "8000/tcp" (a port from 1 to 65535)',
}
_SVC_HINT = "list the services under `services:`, e.g. `services: {web: {image: nginx}}`"
