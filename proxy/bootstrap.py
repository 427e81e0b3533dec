"""How a sidecar starts: who it is, where to listen, where its control plane is.

The runtime writes one bootstrap JSON file per sidecar (as Envoy takes a
bootstrap config) and starts ``python -m proxy --bootstrap FILE``. Everything
that can change while the mesh runs comes later, in snapshots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["sidecar", "gateway"]


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
    token_file: Path
    state_dir: Path
    """Where the last good snapshot is kept."""
    role: Role = "sidecar"
    listen_host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    """The host other sidecars use to reach this one's inbound listener."""
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
                token_file=Path(data["token_file"]),
                state_dir=Path(data["state_dir"]),
                role=role,
                listen_host=str(data.get("listen_host", "127.0.0.1")),
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
            "token_file": str(self.token_file),
            "state_dir": str(self.state_dir),
            "role": self.role,
            "listen_host": self.listen_host,
            "advertise_host": self.advertise_host,
            "inbound_port": self.inbound_port,
            "outbound_port": self.outbound_port,
            "app_port": self.app_port,
            "health_path": self.health_path,
            "gateway": [{"port": g.port, "service": g.service} for g in self.gateway],
            "ready_file": str(self.ready_file) if self.ready_file else None,
        }
