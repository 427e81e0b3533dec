"""Compose's small syntaxes: ``${VAR}`` interpolation, ``.env`` files and port entries.

Pure apart from ``read_dotenv``. Interpolation follows the Compose spec:
``$VAR`` and ``${VAR}``; ``${VAR:-default}`` (unset or empty) and
``${VAR-default}`` (unset); ``${VAR:+other}`` / ``${VAR+other}``;
``${VAR:?message}`` / ``${VAR?message}`` (required); ``$$`` is a literal ``$``.
Defaults may hold further references. What goes wrong is returned as
``Finding``s, so the caller words them with the file and line. Ports come as
``"8080:80"``, ``"127.0.0.1:8080:80/tcp"``, ``"80"``, ``80`` or the long form
``{target, published, host_ip, protocol}``; ``expose`` entries as ``"8000/tcp"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devmesh.config.yamlsource import path_item, path_join

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.DOTALL)
_SHORT_PORT = re.compile(
    r"^(?:(?:(?P<ip>\[[^\]]*\]|[^:\[\]]*):)?(?P<host>[^:]*):)?(?P<target>[^:/]+)(?:/(?P<proto>\w+))?$"
)
_PORT_NUMBER = re.compile(r"^\d+(?:-\d+)?$", re.ASCII)
LONG_PORT_KEYS = ("target", "published", "host_ip", "protocol")
"""The keys of a long-form ``ports`` entry devmesh reads (``mode``, ``name``... it ignores)."""


@dataclass(frozen=True)
class Finding:
    """Something interpolation could not do as written, at a dotted path."""

    path: str
    message: str
    """Words that follow the path: ``uses $TAG, which is not set, ...``."""
    variable: str
    error: bool
    """An error (a required variable, a malformed reference), not a warning."""


def interpolate(
    value: object, path: str, environ: Mapping[str, str]
) -> tuple[object, list[Finding]]:
    """``value`` (and every string inside it) with its variables replaced, and the findings."""
    substitution = _Substitution(environ)
    return substitution.value(value, path), substitution.findings


@dataclass(frozen=True)
class PortEntry:
    """One entry of ``ports`` or ``expose``, as written (numbers as text, ranges as ``80-81``)."""

    target: str
    published: str | None = None
    host_ip: str | None = None
    protocol: str = "tcp"

    @property
    def is_range(self) -> bool:
        return "-" in self.target or "-" in (self.published or "")


def parse_port(entry: object) -> PortEntry | None:
    """A ``ports`` entry in the short or the long syntax; ``None`` if it is neither."""
    if isinstance(entry, dict):
        published, host_ip = entry.get("published"), entry.get("host_ip")
        port = PortEntry(
            target=str(entry.get("target", "")),
            published=None if published is None else str(published),
            host_ip=None if host_ip is None else str(host_ip),
            protocol=str(entry.get("protocol") or "tcp"),
        )
    else:
        match = _SHORT_PORT.match(str(entry)) if isinstance(entry, str | int) else None
        if match is None:
            return None
        ip, host, target, protocol = match.group("ip", "host", "target", "proto")
        port = PortEntry(target, host, ip, protocol or "tcp")
    published_ok = not port.published or _is_port_number(port.published)
    return port if _is_port_number(port.target) and published_ok else None


def parse_expose(entry: object) -> PortEntry | None:
    """An ``expose`` entry: ``"8000"``, ``8000`` or ``"8000/tcp"``; ``None`` if it is not one."""
    target, _, protocol = (str(entry) if isinstance(entry, str | int) else "").partition("/")
    return PortEntry(target, protocol=protocol or "tcp") if _is_port_number(target) else None


def _is_port_number(text: str) -> bool:
    """A port (``80``) or a range (``80-81``) of ports from 1 to 65535, as Compose takes them."""
    return bool(_PORT_NUMBER.match(text)) and all(
        1 <= int(part) <= 65535 for part in text.split("-")
    )


def read_dotenv(path: Path) -> tuple[dict[str, str], list[str]]:
    """The ``KEY=VALUE`` lines of a ``.env`` file (none if there is no file), and warnings."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, IsADirectoryError):
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [f"{path.name}: the file cannot be read ({exc}) and is ignored"]
    values: dict[str, str] = {}
    warnings = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not _VARIABLE.fullmatch(key):
            warnings.append(f"{path.name}:{number}: the line is not KEY=VALUE and is ignored")
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote, value = value[0], value[1:-1]
            value = value.replace("\\n", "\n") if quote == '"' else value
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values, warnings


@dataclass
class _Substitution:
    environ: Mapping[str, str]
    findings: list[Finding] = field(default_factory=list)

    def value(self, value: object, path: str) -> object:
        if isinstance(value, str):
            return self.text(value, path)
        if isinstance(value, list):
            return [self.value(item, path_item(path, i)) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.value(v, path_join(path, str(k))) for k, v in value.items()}
        return value

    def text(self, text: str, path: str) -> str:
        out, index = [], 0
        while index < len(text):
            char, following = text[index], text[index + 1 : index + 2]
            if char != "$" or not following:
                out.append(char)
                index += 1
            elif following == "$":
                out.append("$")
                index += 2
            elif following == "{":
                end = _closing_brace(text, index + 2)
                if end is None:
                    self._invalid(text[index:], path)
                    return text
                out.append(self._braced(text[index + 2 : end], path))
                index = end + 1
            elif match := _VARIABLE.match(text, index + 1):
                out.append(self._variable(match.group(), path))
                index = match.end()
            else:  # as in Compose, a `$` before anything else stays as it is
                out.append(char)
                index += 1
        return "".join(out)

    def _braced(self, inner: str, path: str) -> str:
        match = _BRACED.fullmatch(inner)
        if match is None:
            self._invalid(f"${{{inner}}}", path)
            return ""
        name, operator, word = match.groups()
        value = self.environ.get(name)
        if operator is None:
            return self._variable(name, path)
        if value is None or (operator.startswith(":") and not value):
            if operator.endswith("?"):
                reason = f" ({word})" if word else ""
                message = f"needs the variable {name}{reason}, which is not set"
                self.findings.append(Finding(path, message, name, error=True))
            return self.text(word, path) if operator.endswith("-") else ""
        return self.text(word, path) if operator.endswith("+") else value

    def _variable(self, name: str, path: str) -> str:
        value = self.environ.get(name)
        if value is None:
            message = f"uses ${name}, which is not set, so it is replaced by an empty string"
            self.findings.append(Finding(path, message, name, error=False))
        return value or ""

    def _invalid(self, text: str, path: str) -> None:
        message = f"holds '{text}', which is not a valid variable reference"
        self.findings.append(Finding(path, message, "", error=True))


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the ``}`` that closes the ``${`` before ``start``, past nested ``${...}``."""
    depth, index = 0, start
    while index < len(text):
        if text.startswith("${", index):
            depth, index = depth + 1, index + 2
            continue
        if text[index] == "}":
            if depth == 0:
                return index
            depth -= 1
        index += 1
    return None
