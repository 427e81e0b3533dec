"""The config snapshot a sidecar accepts: the contract between control plane and data plane.

Like Envoy's xDS resources, this schema belongs to the data plane: the control
plane builds snapshots in this shape, the sidecar validates every one it
receives with ``parse_snapshot`` and applies it whole or not at all. A snapshot
that fails to parse is rejected (NACK) and the previous one stays in force.

Wire form (JSON)::

    {"version": 7,
     "routes": {"catalog": {"endpoints": [{"instance": "catalog-v1-1", "version": "v1",
                                           "address": "127.0.0.1:41234"}],
                            "split": {"v1": 90, "v2": 10},
                            "versions": ["v1", "v2"],
                            "mtls": "strict",
                            "authz": [{"name": "readers", "action": "allow",
                                       "sources": ["spiffe://devmesh.local/shop/frontend"],
                                       "methods": ["GET"]}]}}}

``mtls`` and ``authz`` are the destination's: a caller's sidecar reads the mode to
know whether to call it over mTLS, the destination's own sidecar reads both to
know whom to let in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.authz import AuthzError, AuthzPolicy, parse_policies
from proxy.policy import DEFAULT as DEFAULT_POLICY
from proxy.policy import PolicyError, RoutePolicy, parse_policy, policy_to_wire

MTLS_MODES = ("strict", "permissive", "off")
"""``strict``: only mTLS from a mesh identity is let in; ``permissive``: mTLS or plaintext
on the same port (callers in the mesh use mTLS); ``off``: plaintext only."""
DEFAULT_MTLS = "permissive"


class SnapshotError(ValueError):
    """A snapshot does not match the schema; the message says where."""


@dataclass(frozen=True)
class Endpoint:
    instance: str
    version: str
    address: str
    """``host:port`` of the instance's inbound sidecar listener."""

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass(frozen=True)
class Route:
    """How to reach one destination service."""

    endpoints: tuple[Endpoint, ...] = ()
    split: Mapping[str, float] | None = None
    """Weight per version (summing to 100); ``None`` spreads over all endpoints."""
    versions: tuple[str, ...] = ()
    """The service's named versions: ``<service>-<version>`` is a host for each of them."""
    policy: RoutePolicy = DEFAULT_POLICY
    """How calls to it are handled: timeout, retries, breaker, pool, balancing, faults."""
    mtls: str = DEFAULT_MTLS
    """Its mTLS mode (one of ``MTLS_MODES``)."""
    authz: tuple[AuthzPolicy, ...] = ()
    """Its authorization policies."""


@dataclass(frozen=True)
class Snapshot:
    version: int
    routes: Mapping[str, Route] = field(default_factory=dict)


EMPTY = Snapshot(version=0)


def parse_snapshot(data: object) -> Snapshot:
    """Validate the wire form and build a ``Snapshot``; raises ``SnapshotError``."""
    obj = _mapping(data, "snapshot")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise SnapshotError("snapshot.version must be a non-negative integer")
    routes_raw = _mapping(obj.get("routes", {}), "snapshot.routes")
    routes = {
        _name(name, "snapshot.routes"): _parse_route(raw, f"snapshot.routes.{name}")
        for name, raw in routes_raw.items()
    }
    return Snapshot(version=version, routes=routes)


def snapshot_to_wire(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "version": snapshot.version,
        "routes": {
            name: {
                "endpoints": [
                    {"instance": e.instance, "version": e.version, "address": e.address}
                    for e in route.endpoints
                ],
                **({"split": dict(route.split)} if route.split is not None else {}),
                **({"versions": list(route.versions)} if route.versions else {}),
                **(
                    {"policy": policy_to_wire(route.policy)}
                    if route.policy != DEFAULT_POLICY
                    else {}
                ),
                **({"mtls": route.mtls} if route.mtls != DEFAULT_MTLS else {}),
                **({"authz": [p.to_wire() for p in route.authz]} if route.authz else {}),
            }
            for name, route in snapshot.routes.items()
        },
    }


def save_snapshot(snapshot: Snapshot, path: Path) -> None:
    """Write atomically, so a crash mid-write never leaves a torn last-good snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snapshot_to_wire(snapshot)))
    tmp.replace(path)


def load_snapshot(path: Path) -> Snapshot | None:
    """The last good snapshot on disk, or ``None`` if there is none or it is unreadable."""
    try:
        return parse_snapshot(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _parse_route(data: object, where: str) -> Route:
    obj = _mapping(data, where)
    endpoints_raw = obj.get("endpoints", [])
    if not isinstance(endpoints_raw, list):
        raise SnapshotError(f"{where}.endpoints must be a list")
    endpoints = tuple(
        _parse_endpoint(raw, f"{where}.endpoints[{i}]") for i, raw in enumerate(endpoints_raw)
    )
    split_raw = obj.get("split")
    split: dict[str, float] | None = None
    if split_raw is not None:
        split = {}
        for version, weight in _mapping(split_raw, f"{where}.split").items():
            if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
                raise SnapshotError(f"{where}.split.{version} must be a number >= 0")
            split[_name(version, f"{where}.split")] = float(weight)
        if abs(sum(split.values()) - 100.0) > 1e-6:
            raise SnapshotError(f"{where}.split weights must sum to 100")
    versions_raw = obj.get("versions", [])
    if not isinstance(versions_raw, list):
        raise SnapshotError(f"{where}.versions must be a list")
    versions = tuple(_name(v, f"{where}.versions") for v in versions_raw)
    try:
        policy = parse_policy(obj.get("policy", {}), f"{where}.policy")
    except PolicyError as exc:
        raise SnapshotError(str(exc)) from None
    mtls = obj.get("mtls", DEFAULT_MTLS)
    if mtls not in MTLS_MODES:
        raise SnapshotError(f"{where}.mtls must be one of {', '.join(MTLS_MODES)}")
    try:
        authz = parse_policies(obj.get("authz", []), f"{where}.authz")
    except AuthzError as exc:
        raise SnapshotError(str(exc)) from None
    return Route(
        endpoints=endpoints,
        split=split,
        versions=versions,
        policy=policy,
        mtls=str(mtls),
        authz=authz,
    )


def _parse_endpoint(data: object, where: str) -> Endpoint:
    obj = _mapping(data, where)
    fields = {}
    for key in ("instance", "version", "address"):
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            raise SnapshotError(f"{where}.{key} must be a non-empty string")
        fields[key] = value
    host, sep, port = fields["address"].rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise SnapshotError(f"{where}.address must be host:port, got {fields['address']!r}")
    return Endpoint(**fields)


def _mapping(data: object, where: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise SnapshotError(f"{where} must be an object")
    return data


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SnapshotError(f"{where} keys must be non-empty strings")
    return value
