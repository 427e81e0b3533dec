"""The proxies the control plane last routed to, kept on disk (``.devmesh/roster.json``).

A control plane that restarts has lost its connections, not the mesh: the
sidecars still run and dial it again within a second or two. So that its
first snapshot does not drop them meanwhile, it starts from the roster it
kept: each proxy as it last was (address, health), counted as disconnected
from the moment it starts, until its sidecar says hello again or its grace
period ends.

The roster is observed state, not the user's: a file that cannot be read
whole is ignored (with a warning: the mesh then routes only to the sidecars
that say hello), and ``down`` removes it with the other records of a run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devmesh.workspace import read_json, write_json

log = logging.getLogger("devmesh.controlplane")

FORMAT = 1
HEALTH_STATES = ("starting", "ready", "unhealthy")


@dataclass(frozen=True)
class Member:
    """One proxy as the control plane last knew it."""

    service: str
    version: str
    instance: str
    role: str
    inbound: str | None
    health: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "instance": self.instance,
            "role": self.role,
            "inbound": self.inbound,
            "health": self.health,
            "detail": self.detail,
        }


class Roster:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: tuple[Member, ...] | None = None

    def load(self) -> list[Member]:
        """The members kept, or none if the file is missing or not whole."""
        if not self.path.exists():
            return []
        data = read_json(self.path)
        members = _members(data) if data is not None else None
        if members is None:
            log.warning("ignoring %s: it is not a roster this devmesh wrote", self.path)
            return []
        self._saved = tuple(members)
        return members

    def save(self, members: Iterable[Member]) -> None:
        """Keep ``members`` (written only when they changed)."""
        kept = tuple(sorted(members, key=lambda m: m.instance))
        if kept == self._saved:
            return
        try:
            write_json(self.path, {"format": FORMAT, "members": [m.to_json() for m in kept]})
        except OSError as exc:
            log.warning("could not keep the roster in %s: %s", self.path, exc)
            return
        self._saved = kept


def _members(data: object) -> list[Member] | None:
    if not isinstance(data, dict) or type(data.get("format")) is not int:
        return None
    if data["format"] != FORMAT:
        return None
    raw = data.get("members")
    if not isinstance(raw, list):
        return None
    members = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        strings = ("service", "version", "instance", "role", "health", "detail")
        if not all(isinstance(item.get(key), str) for key in strings):
            return None
        inbound = item.get("inbound")
        if not (inbound is None or isinstance(inbound, str)) or item["health"] not in HEALTH_STATES:
            return None
        members.append(
            Member(
                service=item["service"],
                version=item["version"],
                instance=item["instance"],
                role=item["role"],
                inbound=inbound,
                health=item["health"],
                detail=item["detail"],
            )
        )
    return members
