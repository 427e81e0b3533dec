"""How a sidecar starts: who it is, where to listen, where its control plane is.

The runtime writes one bootstrap JSON file per sidecar (as Envoy takes a
bootstrap config) and starts ``python -m proxy --bootstrap FILE``. Everything
that can change while the mesh runs comes later, in snapshots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["sidecar", "gateway"]

TOKEN_ENV = "DEVMESH_TOKEN"
"""Where a sidecar without a ``token_file`` (one in a container) finds the project token."""
BOOTSTRAP_ENV = "DEVMESH_BOOTSTRAP"
"""The bootstrap JSON itself, for ``python -m proxy`` started without ``--bootstrap``."""
AUTO = "auto"


class BootstrapError(ValueError):
    """The bootstrap file is unusable; the message says which field."""


@dataclass(frozen=True)
class GatewayListener:
    """A host port where traffic from outside the mesh enters, bound for one service."""

    port: int
    service: str


@dataclass(frozen=True)
class Bootstrap:
    service: str
    """The identity this proxy speaks for (``ingress`` for the gateway)."""
    version: str
    instance: str
    control_plane: str
    """Base URL of the control plane, e.g. ``http://127.0.0.1:41000``."""
    token_file: Path | None
    """The project token's file; ``None``: the token is in ``$DEVMESH_TOKEN``."""
    state_dir: Path
    """Where the last good snapshot is kept."""
    role: Role = "sidecar"
    listen_host: str = "127.0.0.1"
    """Where the inbound and gateway listeners bind."""
    outbound_host: str = "127.0.0.1"
    """Where the outbound listener binds: only the instance itself may use it."""
    advertise_host: str = "127.0.0.1"
    """The host other sidecars use to reach this one's inbound listener; ``auto``: the
    address this sidecar reaches its control plane from (its address on the network)."""
    inbound_port: int = 0
    outbound_port: int = 0
    app_port: int | None = None
    """The port of the instance this sidecar fronts (``None``: it receives no traffic)."""
    health_path: str | None = None
    gateway: tuple[GatewayListener, ...] = ()
    ready_file: Path | None = None
    """Written (atomically) with the bound ports once every listener is up."""

    @property
    def snapshot_file(self) -> Path:
        """Where the last good snapshot is kept, to start from when the control plane is away."""
        return self.state_dir / "snapshot.json"

    def token(self) -> str:
        """The project token; ``OSError``/``KeyError`` if it cannot be had."""
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return os.environ[TOKEN_ENV].strip()

    @classmethod
    def from_env(cls) -> Bootstrap:
        text = os.environ.get(BOOTSTRAP_ENV)
        if not text:
            raise BootstrapError(f"give --bootstrap FILE or set ${BOOTSTRAP_ENV}")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BootstrapError(f"${BOOTSTRAP_ENV} is not JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: Path) -> Bootstrap:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BootstrapError(f"cannot read bootstrap file {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Bootstrap:
        if not isinstance(data, dict):
            raise BootstrapError("bootstrap must be a JSON object")
        try:
            role = data.get("role", "sidecar")
            if role not in ("sidecar", "gateway"):
                raise BootstrapError(f"bootstrap.role must be sidecar or gateway, got {role!r}")
            return cls(
                service=str(data["service"]),
                version=str(data["version"]),
                instance=str(data["instance"]),
                control_plane=str(data["control_plane"]).rstrip("/"),
                token_file=Path(data["token_file"]) if data.get("token_file") else None,
                state_dir=Path(data["state_dir"]),
                role=role,
                listen_host=str(data.get("listen_host", "127.0.0.1")),
                outbound_host=str(data.get("outbound_host", "127.0.0.1")),
                advertise_host=str(data.get("advertise_host", "127.0.0.1")),
                inbound_port=int(data.get("inbound_port", 0)),
                outbound_port=int(data.get("outbound_port", 0)),
                app_port=None if data.get("app_port") is None else int(data["app_port"]),
                health_path=data.get("health_path"),
                gateway=tuple(
                    GatewayListener(port=int(g["port"]), service=str(g["service"]))
                    for g in data.get("gateway", [])
                ),
                ready_file=Path(data["ready_file"]) if data.get("ready_file") else None,
            )
        except KeyError as exc:
            raise BootstrapError(f"bootstrap is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise BootstrapError(f"bootstrap has a field of the wrong type: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "instance": self.instance,
            "control_plane": self.control_plane,
            "token_file": str(self.token_file) if self.token_file is not None else None,
            "state_dir": str(self.state_dir),
            "role": self.role,
            "listen_host": self.listen_host,
            "outbound_host": self.outbound_host,
            "advertise_host": self.advertise_host,
            "inbound_port": self.inbound_port,
            "outbound_port": self.outbound_port,
            "app_port": self.app_port,
            "health_path": self.health_path,
            "gateway": [{"port": g.port, "service": g.service} for g in self.gateway],
            "ready_file": str(self.ready_file) if self.ready_file else None,
        }
