"""Finding and reading ``devmesh.yaml``: the only file I/O of ``devmesh.config``."""

from __future__ import annotations

from pathlib import Path

from devmesh.config.model import Project
from devmesh.config.validate import parse_project
from devmesh.config.validate_shape import NAME, suggest_name
from devmesh.config.yamlsource import load_yaml
from devmesh.errors import ConfigError, Problem, UsageError

CONFIG_NAMES = ("devmesh.yaml", "devmesh.yml")
FALLBACK_NAME = "devmesh"
_INIT_HINT = (
    "run `devmesh init` to create one (`devmesh init --from docker-compose.yml` converts a "
    "compose file), or run devmesh in the folder that has it"
)


def find_config(directory: Path) -> Path:
    """The ``devmesh.yaml`` (or ``devmesh.yml``) in ``directory``; ``UsageError`` if none."""
    found = [directory / name for name in CONFIG_NAMES if (directory / name).is_file()]
    if not found:
        raise UsageError(f"there is no devmesh.yaml in {directory}", _INIT_HINT)
    if len(found) > 1:
        raise UsageError(
            f"both devmesh.yaml and devmesh.yml are in {directory}",
            "keep one of them, so it is clear which one devmesh uses",
        )
    return found[0]


def default_project_name(path: Path) -> str:
    """The project name when the file gives none: its folder's name, made valid."""
    name = suggest_name(path.absolute().parent.name)
    return name if NAME.match(name) else FALLBACK_NAME


def load_project(path: Path, *, default_name: str | None = None) -> Project:
    """Read, parse and validate the config file at ``path``.

    Without ``name:`` in the file the project is named ``default_name``, by
    default the file's folder name made valid. A file that cannot be read is a
    ``UsageError``; anything wrong inside it, a ``ConfigError`` listing it all.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"the config file {path} does not exist", _INIT_HINT) from None
    except IsADirectoryError:
        raise UsageError(
            f"{path} is a folder, not a config file",
            f"pass the path of its devmesh.yaml, e.g. {path / CONFIG_NAMES[0]}",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"the config file {path} cannot be read: {exc.strerror or exc}",
            "check that it exists and that you may read it",
        ) from None
    document = load_yaml(_decode(raw, path), file=path)
    return parse_project(
        document.data,
        file=path,
        lines=document.lines,
        default_name=default_name if default_name is not None else default_project_name(path),
    )


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Problem(
            path="",
            message="the file is not UTF-8 text",
            hint="save it with the UTF-8 encoding",
            file=path,
            line=raw.count(b"\n", 0, exc.start) + 1,
        )
        raise ConfigError([problem]) from None
