"""Desired containers against the ones Docker has: what to keep, remove and create.

Pure, like compose's convergence plan: the runtime lists the project's
containers, this decides, the runtime carries it out. A container is kept
only if it runs with the very spec wanted (same hash). A service container
lives in its sidecar's network namespace, so a new sidecar means a new
service container too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from devmesh.runtime.docker.topology import ContainerSpec


@dataclass(frozen=True)
class Observed:
    """A container of the project as Docker reports it."""

    name: str
    role: str
    spec_hash: str
    running: bool
    id: str = ""


@dataclass
class Plan:
    keep: list[ContainerSpec] = field(default_factory=list)
    create: list[ContainerSpec] = field(default_factory=list)
    remove: list[Observed] = field(default_factory=list)
    """In a safe order: service containers before the sidecars whose namespace they share."""

    @property
    def unchanged(self) -> bool:
        return not self.create and not self.remove


REMOVE_ORDER = {"init": 0, "service": 1, "gateway": 2, "sidecar": 3}
"""Services go before the sidecars whose network namespace they share."""


def plan(desired: Iterable[ContainerSpec], observed: Iterable[Observed]) -> Plan:
    have = {o.name: o for o in observed}
    result = Plan()
    recreated_sidecars: set[str] = set()
    for spec in sorted(desired, key=lambda s: s.role != "sidecar"):  # sidecars decided first
        current = have.get(spec.name)
        fresh = current is not None and current.running and current.spec_hash == spec.spec_hash
        if spec.join is not None and spec.join in recreated_sidecars:
            fresh = False
        if fresh:
            result.keep.append(spec)
            del have[spec.name]
            continue
        if spec.role == "sidecar":
            recreated_sidecars.add(spec.name)
        result.create.append(spec)
    result.remove = sorted(have.values(), key=lambda o: (REMOVE_ORDER.get(o.role, 9), o.name))
    result.create = desired_order(result.create)
    return result


def desired_order(specs: Iterable[ContainerSpec]) -> list[ContainerSpec]:
    """Sidecars and the gateway first (they own namespaces), then service containers."""
    return sorted(specs, key=lambda s: s.role == "service")
