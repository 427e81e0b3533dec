"""The ``.devmesh/`` folder of a project: the token, the persisted state, logs, runtime records.

Everything devmesh writes for a project lives here, so ``rm -rf .devmesh``
(after ``devmesh down``) forgets the project entirely. The folder is 0700 and
the secrets in it 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIRNAME = ".devmesh"


@dataclass(frozen=True)
class Workspace:
    project_dir: Path

    @property
    def root(self) -> Path:
        return self.project_dir / DIRNAME

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def state_file(self) -> Path:
        """The control plane's persisted state (desired project, user overrides)."""
        return self.root / "state.json"

    @property
    def controlplane_file(self) -> Path:
        """Where a running control plane says where it listens."""
        return self.root / "controlplane.json"

    @property
    def roster_file(self) -> Path:
        """The proxies the control plane last routed to (observed state, for its restart)."""
        return self.root / "roster.json"

    @property
    def runtime_file(self) -> Path:
        """What the local runtime started (pids, ports), so ``down`` can stop exactly that."""
        return self.root / "runtime.json"

    @property
    def images_file(self) -> Path:
        """What each image devmesh built for the project was built from (Docker runtime)."""
        return self.root / "images.json"

    @property
    def ca_dir(self) -> Path:
        """The project's certificate authority (its key 0600)."""
        return self.root / "ca"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def sidecar_dir(self, instance: str) -> Path:
        return self.root / "sidecars" / instance

    def log_file(self, instance: str, *, sidecar: bool = False) -> Path:
        return self.logs_dir / (f"{instance}.sidecar.log" if sidecar else f"{instance}.log")

    def forget_run(self) -> None:
        """Remove the records of a run that no longer runs (state, token, CA and logs stay)."""
        for path in (self.runtime_file, self.controlplane_file, self.roster_file):
            path.unlink(missing_ok=True)

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.logs_dir.mkdir(exist_ok=True)

    def token(self, *, create: bool = False) -> str:
        """The per-project API token; with ``create``, made (0600) if missing."""
        path = self.token_file
        if create and not path.exists():
            self.ensure()
            write_secret(path, secrets.token_urlsafe(32) + "\n")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            path.chmod(0o600)
        return path.read_text().strip()


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, without a window where it is not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def write_json(path: Path, data: Any, mode: int = 0o600) -> None:
    """Write atomically (temp file + rename): readers see the old or the new, never half.

    Only JSON: a NaN or an infinity in ``data`` is a bug, raised (``ValueError``) before
    anything is written, never written as text no JSON reader takes.
    """
    text = json.dumps(data, indent=1, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or ``None`` if it does not exist or is torn."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
