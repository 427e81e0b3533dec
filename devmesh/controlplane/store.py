"""The control plane's persisted state: what must survive a control-plane restart.

That is the desired project (as the CLI last applied it), the runtime
overrides the user made (splits, faults, policy settings), and the
snapshot version counter, so versions never go backwards across a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devmesh.errors import DevmeshError
from devmesh.workspace import read_json, write_json

FORMAT = 1


@dataclass
class StoredState:
    project: dict[str, Any] | None = None
    """The project in config form (``dump_project``), as last applied."""
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    """Runtime split overrides, by service; they win over ``policies.<svc>.split``."""
    snapshot_version: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    """Runtime faults and policy settings (see ``overrides.Overrides``), in config form."""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> StoredState:
        if not self.path.exists():
            return StoredState()
        data = read_json(self.path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DevmeshError(
                f"the control plane's state file {self.path} is unreadable or from another "
                "devmesh version",
                f"move it aside (mv {self.path} {self.path}.bak) to start with no overrides",
            )
        return StoredState(
            project=data.get("project"),
            splits={
                str(svc): {str(v): float(w) for v, w in weights.items()}
                for svc, weights in (data.get("splits") or {}).items()
            },
            snapshot_version=int(data.get("snapshot_version", 0)),
            overrides=dict(data.get("overrides") or {}),
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
