"""The control plane's persisted state: what must survive a control-plane restart.

That is the desired project (as the CLI last applied it), the runtime
overrides the user made (splits, faults, policy settings), and the
snapshot version counter, so versions never go backwards across a restart.

A state file is taken whole or not at all: ``read_state`` checks every part of
it (its JSON, each value's type, the project and the overrides by the same
validation the API's changes go through) before any of it is used, so a file
the control plane cannot use is refused at start with a sentence saying what is
wrong in it, never applied in part or failing later.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devmesh.config import parse_project
from devmesh.config.model import Project
from devmesh.config.readers import describe
from devmesh.controlplane.overrides import MESH_WIDE, OVERRIDABLE, Overrides
from devmesh.errors import ConfigError, DevmeshError
from devmesh.strictjson import loads as strict_loads
from devmesh.units import finite_number
from devmesh.workspace import write_json

FORMAT = 1
KEYS = ("format", "project", "splits", "snapshot_version", "overrides")
OVERRIDE_KEYS = ("faults", "next_fault", "policies", "authorization", "mtls")
FAULT_KEYS = ("service", "fault", "expires_at")


@dataclass
class StoredState:
    project: dict[str, Any] | None = None
    """The project in config form (``dump_project``), as last applied."""
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    """Runtime split overrides, by service; they win over ``policies.<svc>.split``."""
    snapshot_version: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    """Runtime faults and policy settings (see ``overrides.Overrides``), in config form."""


class StateProblem(ValueError):
    """What is wrong in a state file, as the end of a sentence naming it."""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> StoredState:
        """The state in the file (none yet: an empty one); ``DevmeshError`` saying what is
        wrong in it, and how to start without it, if it cannot be used whole."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return StoredState()
        except OSError as exc:
            raise self._refused(f"cannot be read ({exc.strerror or exc})") from None
        except ValueError:
            raise self._refused("is not text (not UTF-8)") from None
        try:
            return read_state(text)
        except StateProblem as exc:
            raise self._refused(str(exc)) from None

    def _refused(self, what: str) -> DevmeshError:
        return DevmeshError(
            f"the control plane's state file {self.path} {what}",
            f"move it aside (mv {self.path} {self.path}.bak) to start with no runtime changes",
        )

    def save(self, state: StoredState) -> None:
        write_json(
            self.path,
            {
                "format": FORMAT,
                "project": state.project,
                "splits": state.splits,
                "snapshot_version": state.snapshot_version,
                "overrides": state.overrides,
            },
        )


def read_state(text: str) -> StoredState:
    """The state a state file's ``text`` holds, checked whole; ``StateProblem`` otherwise."""
    try:
        data = strict_loads(text)
    except ValueError as exc:  # NotJsonNumber names the value
        raise StateProblem(f"is not JSON devmesh wrote: {exc}") from None
    if not isinstance(data, dict) or "format" not in data:
        raise StateProblem("is not a devmesh state file (it has no format)")
    given = data["format"]
    if isinstance(given, bool) or given != FORMAT:  # true == 1 in Python, not in this file
        raise StateProblem(
            f"is of format {describe(given)}, from another devmesh version "
            f"(this one reads format {FORMAT})"
        )
    _known_keys(data, KEYS, "")
    raw_project = data.get("project")
    project = _project(raw_project) if raw_project is not None else None
    splits = _mapping(data.get("splits"), "splits")
    overrides = _mapping(data.get("overrides"), "overrides")
    version = data.get("snapshot_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise StateProblem(f"has a snapshot_version of {describe(version)}, not a count")
    if project is None:
        if splits or any(overrides.get(key) for key in OVERRIDE_KEYS):
            raise StateProblem("holds runtime changes but no project to apply them to")
        _known_keys(overrides, OVERRIDE_KEYS, "overrides")
        return StoredState(snapshot_version=version)
    return StoredState(
        project=raw_project,
        splits=_splits(splits, project),
        snapshot_version=version,
        overrides=_overrides(overrides, project),
    )


def _project(raw: object) -> Project:
    try:
        return parse_project(raw)
    except ConfigError as exc:
        first = exc.problems[0]
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        where = f"{first.path}: " if first.path else ""
        what = f"{where}{first.message}{more}"
        raise StateProblem(f"holds a project devmesh refuses: {what}") from None


def _splits(splits: dict[str, Any], project: Project) -> dict[str, dict[str, float]]:
    checked = {}
    for service, weights in splits.items():
        if service not in project.services:
            raise StateProblem(f"splits the calls to {service!r}, which is not a service")
        try:
            weights = _mapping(weights, f"splits.{service}")
            checked[service] = Overrides({}).check_split(project, service, weights)
        except ConfigError as exc:
            raise StateProblem(
                f"holds a split devmesh refuses: {exc.problems[0].message}"
            ) from None
    return checked


def _overrides(overrides: dict[str, Any], project: Project) -> dict[str, Any]:
    """The overrides, checked: each part of the shape ``Overrides`` keeps, then all of them
    over the project by the validation every change goes through."""
    _known_keys(overrides, OVERRIDE_KEYS, "overrides")
    faults = _mapping(overrides.get("faults"), "overrides.faults")
    next_fault = overrides.get("next_fault", 1)
    if not isinstance(next_fault, int) or isinstance(next_fault, bool) or next_fault < 1:
        raise StateProblem(f"has an overrides.next_fault of {describe(next_fault)}, not a count")
    for fault_id, entry in faults.items():
        path = f"overrides.faults.{fault_id}"
        number = fault_id[1:]
        if not (fault_id.startswith("f") and number.isdecimal()):
            raise StateProblem(f"has a fault named {fault_id!r}, not an id devmesh gives (f1, f2…)")
        if int(number) >= next_fault:
            raise StateProblem(
                f"has a fault {fault_id} that its next_fault, {next_fault}, would give again"
            )
        entry = _mapping(entry, path)
        _known_keys(entry, FAULT_KEYS, path)
        if (
            not isinstance(entry.get("service"), str)
            or not isinstance(entry.get("fault"), dict)
            or "expires_at" not in entry
        ):
            raise StateProblem(f"has a fault {fault_id} without its service, fault and expiry")
        expires_at = entry.get("expires_at")
        if expires_at is not None and finite_number(expires_at) is None:
            raise StateProblem(
                f"has a fault {fault_id} that expires at {describe(expires_at)}, not a time"
            )
    for service, settings in _mapping(overrides.get("policies"), "overrides.policies").items():
        _known_keys(
            _mapping(settings, f"overrides.policies.{service}"),
            OVERRIDABLE,
            f"overrides.policies.{service}",
        )
    rules = overrides.get("authorization", [])
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise StateProblem("has an overrides.authorization that is not a list of rules")
    for key, mode in _mapping(overrides.get("mtls"), "overrides.mtls").items():
        if key != MESH_WIDE and key not in project.services:
            raise StateProblem(f"sets the mTLS mode of {key!r}, which is not a service")
        if not isinstance(mode, str):
            raise StateProblem(f"sets the mTLS mode of {key} to {describe(mode)}, not a mode")
    checked = copy.deepcopy(overrides)
    try:
        Overrides(checked).check(project)
    except ConfigError as exc:
        first = exc.problems[0]
        raise StateProblem(
            f"holds a runtime change devmesh refuses: {first.path}: {first.message}"
        ) from None
    return checked


def _mapping(value: object, path: str) -> dict[str, Any]:
    """``value`` if it is a JSON object (``None``: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StateProblem(f"has {path} as {describe(value)}, not a mapping")
    return value


def _known_keys(data: dict[str, Any], keys: tuple[str, ...], path: str) -> None:
    for key in data:
        if key not in keys:
            where = f" in {path}" if path else ""
            raise StateProblem(f"has an unknown key {key!r}{where}")
