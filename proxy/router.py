"""Which service and version a call goes to, under the snapshot in force. Pure logic, no I/O.

The router holds the snapshot in force. ``update`` swaps it in one assignment,
so a request that already chose its endpoints finishes under the old snapshot
and the next one uses the new. Which endpoint of that version takes the call
is the destination's balancer's and breaker's choice (``proxy.destinations``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from proxy.snapshot import EMPTY, Endpoint, Route, Snapshot


@dataclass(frozen=True)
class NoEndpoint:
    """Why no endpoint could be picked; ``reason`` is shown to the caller."""

    reason: str


class Router:
    def __init__(self, snapshot: Snapshot = EMPTY, rand: Callable[[], float] = random.random):
        self._snapshot = snapshot
        self._rand = rand
        self._listeners: list[Callable[[Snapshot], None]] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for listener in self._listeners:
            listener(snapshot)

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Have ``listener`` called with every new snapshot (after it is in force)."""
        self._listeners.append(listener)

    def resolve(self, host: str) -> tuple[str, str | None] | None:
        """The service (and version) a host name means: ``catalog``, or ``catalog-v2``."""
        routes = self._snapshot.routes
        if host in routes:
            return host, None
        service, sep, version = host.rpartition("-")
        while sep:
            route = routes.get(service)
            if route is not None and version in route.versions:
                return service, version
            service, sep, rest = service.rpartition("-")
            version = f"{rest}-{version}"
        return None

    def target(
        self, service: str, version: str | None = None
    ) -> tuple[str | None, tuple[Endpoint, ...]] | NoEndpoint:
        """The version a call goes to (the one asked for, else the split's draw) and that
        version's endpoints; the breaker and balancer choose among them."""
        route = self._snapshot.routes.get(service)
        if route is None:
            return NoEndpoint(f"{service} is not a service of this mesh")
        if version is None:
            version = self._pick_version(route)
        elif version not in route.versions:
            known = ", ".join(route.versions) or "none"
            return NoEndpoint(f"{service} has no version {version!r} (its versions: {known})")
        candidates = _of_version(route, version)
        if not candidates:
            return NoEndpoint(f"no healthy instance of {_which(service, version)}")
        return version, candidates

    def _pick_version(self, route: Route) -> str | None:
        if not route.split:
            return None
        point = self._rand() * 100.0
        total = 0.0
        chosen = None
        for version, weight in route.split.items():
            if weight <= 0:
                continue
            chosen = version
            total += weight
            if point < total:
                break
        return chosen


def _of_version(route: Route, version: str | None) -> tuple[Endpoint, ...]:
    if version is None:
        return route.endpoints
    return tuple(e for e in route.endpoints if e.version == version)


def _which(service: str, version: str | None) -> str:
    return service if version is None else f"{service} version {version}"
