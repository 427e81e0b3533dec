"""The control plane's model of the mesh: desired state, connected proxies, snapshots, status.

No I/O here but the state store: the API layer feeds events in (a proxy
connected, reported health, acked a snapshot, sent records) and sends out
the snapshots this model decides on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devmesh.config import dump_project, parse_project
from devmesh.config.model import Policy, Project
from devmesh.controlplane.metrics import DEFAULT_WINDOW, EdgeSecurity, Metrics, Series
from devmesh.controlplane.overrides import ActiveFault, ActiveRule, Overrides
from devmesh.controlplane.routepolicy import route_policy, sidecar_authz
from devmesh.controlplane.store import StateStore, StoredState
from devmesh.errors import UsageError
from devmesh.plan import plan_instances, url_of
from proxy.snapshot import Endpoint, Route, Snapshot

GATEWAY_INSTANCE = "ingress"
BREAKER_HISTORY = 50
"""Breaker changes kept per edge (for the TUI's service detail)."""


class UnknownService(UsageError):
    """A request named a service the project does not have."""


@dataclass
class Proxy:
    """A sidecar (or the gateway) connected to the control plane."""

    service: str
    version: str
    instance: str
    role: str
    inbound: str | None
    health_check: str = ""
    health: str = "starting"
    detail: str = ""
    acked_version: int | None = None
    rejected: str | None = None
    """Why it refused the last snapshot, if it did."""
    connected_at: float = field(default_factory=time.time)
    breakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Its breaker towards each destination, as last reported, by destination service."""
    breakers_at: float = 0.0
    """When they were reported (``retry_in`` counts from then)."""


class Mesh:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._state: StoredState = store.load()
        self.project: Project | None = (
            parse_project(self._state.project) if self._state.project is not None else None
        )
        self.proxies: dict[str, Proxy] = {}
        self._seen: set[str] = set()
        self.metrics = Metrics()
        self.snapshot = Snapshot(version=self._state.snapshot_version)
        self.overrides = Overrides(self._state.overrides)
        self.breaker_history: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        """Each edge's latest breaker changes (opened, half-open, closed; ejections)."""
        self.edge_ejections: dict[tuple[str, str], int] = {}
        """Ejections per edge since the control plane started (a counter: never goes down)."""
        self._ejections_seen: dict[tuple[str, str], int] = {}
        """The ejection count each caller instance last reported per destination (its
        sidecar's own since it started), kept across reconnections."""

    # -- desired state ---------------------------------------------------------

    def apply_project(self, data: object) -> Project:
        """Validate and adopt a project sent by the CLI (config form); persisted."""
        project = parse_project(data)
        self.project = project
        self._state.project = dump_project(project)
        # Overrides for services or versions that no longer exist are dropped.
        self._state.splits = {
            svc: weights
            for svc, weights in self._state.splits.items()
            if svc in project.services and all(project.services[svc].version(v) for v in weights)
        }
        self.overrides.forget_unknown(project)
        self._store.save(self._state)
        return project

    # -- faults and policy settings ------------------------------------------------

    def add_fault(self, service: str, fault: dict[str, Any], lasts: float | None) -> ActiveFault:
        self._service(service)
        added = self.overrides.add_fault(self._project(), service, fault, lasts)
        self._store.save(self._state)
        return added

    def remove_fault(self, fault_id: str) -> ActiveFault:
        removed = self.overrides.remove_fault(self._project(), fault_id)
        self._store.save(self._state)
        return removed

    def reset_faults(self, service: str | None) -> list[str]:
        if service is not None:
            self._service(service)
        removed = self.overrides.reset_faults(service)
        self._store.save(self._state)
        return removed

    def expire_faults(self) -> list[str]:
        """Remove the time-boxed faults whose time is up; their ids (persisted if any)."""
        gone = self.overrides.expire()
        if gone:
            self._store.save(self._state)
        return gone

    def faults(self) -> list[ActiveFault]:
        return self.overrides.active(self.project) if self.project is not None else []

    def policy(self, service: str) -> Policy:
        self._service(service)
        return self.overrides.policy(self._project(), service)

    def policy_overrides(self, service: str) -> dict[str, Any]:
        return dict(self.overrides.state["policies"].get(service, {}))

    def set_policy(self, service: str, settings: dict[str, Any]) -> Policy:
        self._service(service)
        policy = self.overrides.set_policy(self._project(), service, settings)
        self._store.save(self._state)
        return policy

    def clear_policy(self, service: str) -> Policy:
        self._service(service)
        if self.overrides.clear_policy(service):
            self._store.save(self._state)
        return self.policy(service)

    # -- authorization and mTLS ------------------------------------------------------

    def rules(self) -> list[ActiveRule]:
        return self.overrides.rules(self.project) if self.project is not None else []

    def add_rule(self, rule: dict[str, Any]) -> ActiveRule:
        added = self.overrides.add_rule(self._project(), rule)
        self._store.save(self._state)
        return added

    def remove_rule(self, name: str) -> ActiveRule:
        removed = self.overrides.remove_rule(self._project(), name)
        self._store.save(self._state)
        return removed

    def set_mtls(self, service: str | None, mode: str | None) -> dict[str, str]:
        """Set (``mode`` ``None``: reset to devmesh.yaml's) the mTLS mode of ``service`` or,
        with ``None``, of the mesh; every service's mode then."""
        if service is not None:
            self._service(service)
        project = self.overrides.set_mtls(self._project(), service, mode)
        self._store.save(self._state)
        return {name: project.mtls_of(name) for name in project.services}

    def mtls_modes(self) -> dict[str, str]:
        if self.project is None:
            return {}
        effective = self.overrides.resolve(self.project)[0]
        return {name: effective.mtls_of(name) for name in effective.services}

    def _project(self) -> Project:
        if self.project is None:
            raise UnknownService("no project is applied yet", "run `devmesh up`")
        return self.project

    def set_split(self, service: str, weights: Mapping[str, float]) -> None:
        svc = self._service(service)
        if not svc.versioned:
            raise UsageError(
                f"{service} has no versions to split traffic between",
                f"declare versions under services.{service}.versions in devmesh.yaml",
            )
        known = [v.name for v in svc.versions]
        for version, weight in weights.items():
            if version not in known:
                raise UsageError(
                    f"{service} has no version {version!r}",
                    f"its versions are {', '.join(known)}",
                )
            if not 0 <= weight <= 100:
                raise UsageError(
                    f"the weight of {service} {version} is {weight:g}",
                    "give each weight from 0 to 100",
                )
        total = sum(weights.values())
        if abs(total - 100.0) > 1e-6:
            raise UsageError(
                f"the weights for {service} sum to {total:g}, not 100",
                "give weights that add up to 100, e.g. v1=90 v2=10",
            )
        self._state.splits[service] = {v: float(w) for v, w in weights.items()}
        self._store.save(self._state)

    def clear_split(self, service: str) -> None:
        self._service(service)
        if self._state.splits.pop(service, None) is not None:
            self._store.save(self._state)

    def split_for(self, service: str) -> Mapping[str, float] | None:
        if service in self._state.splits:
            return self._state.splits[service]
        return self.project.policy(service).split if self.project else None

    def _service(self, name: str) -> Any:
        if self.project is None or name not in self.project.services:
            known = ", ".join(self.project.services) if self.project else "none"
            raise UnknownService(f"there is no service named {name!r}", f"services: {known}")
        return self.project.services[name]

    # -- proxies -----------------------------------------------------------------

    def connect(self, proxy: Proxy) -> None:
        self.proxies[proxy.instance] = proxy
        self._seen.add(proxy.instance)

    def disconnect(self, proxy: Proxy) -> None:
        # A proxy that reconnected quickly has already replaced this entry.
        if self.proxies.get(proxy.instance) is proxy:
            del self.proxies[proxy.instance]

    def report_breakers(
        self, proxy: Proxy, breakers: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Take ``proxy``'s breaker report; returns the changes, as events (state changes and
        new ejections), also kept in ``breaker_history``."""
        now = self._clock()
        changes = []
        for destination, new in breakers.items():
            old = proxy.breakers.get(destination, {})
            was = old.get("state", "closed")
            ejections = int(new.get("ejections", 0) or 0)
            seen = self._ejections_seen.get((proxy.instance, destination), 0)
            # Below what it said before: the sidecar restarted and counts from 0 again.
            added = ejections - seen if ejections >= seen else ejections
            self._ejections_seen[proxy.instance, destination] = ejections
            key = (proxy.service, destination)
            self.edge_ejections[key] = self.edge_ejections.get(key, 0) + added
            if new["state"] == was and added == 0:
                continue
            event = {
                "type": "breaker",
                "ts": now,
                "source": proxy.service,
                "caller": proxy.instance,
                "destination": destination,
                "state": new["state"],
                "was": was,
                "endpoint": new.get("instance"),
                "reason": new.get("reason"),
                "retry_in": new.get("retry_in"),
                "ejections": ejections,
            }
            history = self.breaker_history.get(key)
            if history is None:
                history = self.breaker_history[key] = deque(maxlen=BREAKER_HISTORY)
            history.append(event)
            changes.append(event)
        proxy.breakers, proxy.breakers_at = breakers, now
        return changes

    def ejections(self, source: str, destination: str) -> int:
        """Ejections on the edge since the control plane started, as its callers reported."""
        return self.edge_ejections.get((source, destination), 0)

    # -- snapshots ---------------------------------------------------------------

    def rebuild(self) -> Snapshot | None:
        """A new snapshot if what the proxies should know has changed, else ``None``."""
        routes = self._routes()
        if routes == self.snapshot.routes:
            return None
        self.snapshot = Snapshot(version=self.snapshot.version + 1, routes=routes)
        self._state.snapshot_version = self.snapshot.version
        self._store.save(self._state)
        return self.snapshot

    def _routes(self) -> dict[str, Route]:
        if self.project is None:
            return {}
        planned = {spec.id for spec in plan_instances(self.project)}
        routes = {}
        effective, faults = self.overrides.resolve(self.project)
        for name in self.project.services:
            endpoints = sorted(
                (
                    Endpoint(instance=p.instance, version=p.version, address=p.inbound)
                    for p in self.proxies.values()
                    if p.service == name
                    and p.role == "sidecar"
                    and p.health == "ready"
                    and p.inbound
                    and p.instance in planned
                ),
                key=lambda e: e.instance,
            )
            split = self.split_for(name)
            service = self.project.services[name]
            routes[name] = Route(
                endpoints=tuple(endpoints),
                split=dict(split) if split is not None else None,
                versions=tuple(v.name for v in service.versions) if service.versioned else (),
                policy=route_policy(
                    effective.policy(name),
                    [f for f in faults if f.service == name],
                ),
                mtls=effective.mtls_of(name),
                authz=sidecar_authz(
                    effective.name, [r for r in effective.authorization if r.service == name]
                ),
            )
        return routes

    # -- status ------------------------------------------------------------------

    def status(self, window: int = DEFAULT_WINDOW, history: bool = False) -> dict[str, Any]:
        """The mesh as users read it: services and instances, with traffic over the last
        ``window`` whole seconds, each edge's breaker; ``history`` adds each edge's and
        service's requests per second over the last minute."""
        now = self._clock()

        def traffic(series: Series | None) -> dict[str, Any] | None:
            if series is None:
                return None
            data = series.view(now, window).to_json()
            if history:
                data["history"] = series.history(now)
            return data

        project = self.project
        services = []
        modes = self.mtls_modes()
        if project is not None:
            by_service: dict[str, list[dict[str, Any]]] = {n: [] for n in project.services}
            for spec in plan_instances(project):
                by_service[spec.service].append(
                    self._instance_status(spec.id, spec.version, traffic)
                )
            services = [
                {
                    "name": name,
                    "url": url_of(project, name),
                    "versions": [v.name for v in svc.versions],
                    "split": self.split_for(name),
                    "mtls": modes.get(name),
                    "authz": [r.to_json() for r in self.rules() if r.rule.service == name],
                    "instances": by_service[name],
                    "traffic": traffic(self.metrics.services.get(name)),
                    "by_version": {
                        v.name: traffic(self.metrics.versions.get((name, v.name)))
                        for v in svc.versions
                    },
                }
                for name, svc in project.services.items()
            ]
        edges = [
            {
                "source": src,
                "destination": dst,
                **(traffic(series) or {}),
                "breaker": self.breaker(src, dst, now),
                "security": self._edge_security(src, dst, modes),
                **(
                    {"breaker_history": list(self.breaker_history.get((src, dst), ()))}
                    if history
                    else {}
                ),
            }
            for (src, dst), series in sorted(self.metrics.edges.items())
        ]
        return {
            "project": project.name if project else None,
            "snapshot_version": self.snapshot.version,
            "window_s": window,
            "services": services,
            "edges": edges,
            "proxies": [
                {
                    "instance": p.instance,
                    "role": p.role,
                    "health": p.health,
                    "acked_version": p.acked_version,
                    "rejected": p.rejected,
                }
                for p in sorted(self.proxies.values(), key=lambda p: p.instance)
            ],
            "faults": [fault.to_json(now) for fault in self.faults()],
            "telemetry": {
                "records": self.metrics.records,
                "dropped": self.metrics.dropped,
                "malformed": self.metrics.malformed,
            },
        }

    def _edge_security(
        self, source: str, destination: str, modes: dict[str, str]
    ) -> dict[str, Any]:
        """The edge's mTLS mode (its destination's), whether it is locked (strict: only mTLS
        gets in), how its requests went, and what authorization denied or audited."""
        mode = modes.get(destination)
        seen = (self.metrics.security.get((source, destination)) or EdgeSecurity()).to_json()
        if mode == "strict":
            shown = "locked"  # only mTLS from the mesh gets in
        elif mode == "off" or seen["last"] == "plaintext":
            shown = "plaintext"
        else:
            shown = "mtls"  # permissive: the mesh's calls use mTLS, others may not
        return {"mode": mode, "locked": mode == "strict", "shown": shown, **seen}

    def breaker(self, source: str, destination: str, now: float) -> dict[str, Any]:
        """The edge's breaker: the worst of its callers' (open, then half-open, then closed;
        of two open ones, one in panic: routing to all), with the reason and the time until
        it tries again."""
        rank = {"open": 2, "half-open": 1, "closed": 0}

        def badness(breaker: dict[str, Any]) -> tuple[int, bool]:
            return rank.get(breaker.get("state", ""), 0), bool(breaker.get("panic"))

        worst: dict[str, Any] = {
            "state": "closed",
            "reason": None,
            "retry_in": None,
            "panic": False,
        }
        for proxy in self.proxies.values():
            if proxy.service != source or destination not in proxy.breakers:
                continue
            reported = dict(proxy.breakers[destination])
            if reported.get("retry_in") is not None:
                reported["retry_in"] = max(0.0, reported["retry_in"] - (now - proxy.breakers_at))
            reported["panic"] = bool(reported.get("panic"))  # a sidecar of before says none
            if badness(reported) > badness(worst):
                worst = reported
        return worst

    def _instance_status(
        self,
        instance: str,
        version: str,
        traffic: Callable[[Series | None], dict[str, Any] | None],
    ) -> dict[str, Any]:
        proxy = self.proxies.get(instance)
        if proxy is not None:
            state, detail, address = proxy.health, proxy.detail, proxy.inbound
        else:
            state = "disconnected" if instance in self._seen else "starting"
            detail = "its sidecar is not connected to the control plane"
            address = None
        served = traffic(self.metrics.instances.get(instance))
        return {
            "id": instance,
            "version": version,
            "state": state,
            "detail": detail,
            "address": address,
            "served": served,
        }
