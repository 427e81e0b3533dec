"""The control plane's model of the mesh: desired state, connected proxies, snapshots.

The write model: no I/O here but the state store. The sidecars' links
(``sidecars``) and the API feed events in (a proxy connected, reported health,
acked a snapshot, a user changed a split) and send out the snapshots this
model decides on. What users read of it (``GET /v1/status``) is built apart,
by ``statusview``.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from devmesh.config import dump_project, parse_project
from devmesh.config.model import GATEWAY, Policy, Project
from devmesh.controlplane.metrics import Metrics
from devmesh.controlplane.overrides import ActiveFault, ActiveRule, Overrides
from devmesh.controlplane.roster import Member, Roster
from devmesh.controlplane.routepolicy import route_policy, sidecar_authz
from devmesh.controlplane.store import StateStore, StoredState
from devmesh.errors import ConfigError, UsageError
from devmesh.payloads import BreakerEvent
from devmesh.plan import plan_instances
from devmesh.runtime.supervision import Report
from proxy.appgate import HOLD_LIMIT
from proxy.snapshot import Endpoint, Route, Snapshot

GATEWAY_INSTANCE = GATEWAY
"""The gateway's instance (``devmesh.config.model.GATEWAY``)."""
BREAKER_HISTORY = 50
"""Breaker changes kept per edge (for the TUI's service detail)."""
DISCONNECT_GRACE = 10.0
"""How long a proxy whose control link dropped keeps its place in routing, as it last was
(a sidecar dials again within about two seconds; one that died is reported by its runtime)."""


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
    left: bool = False
    """It said it is stopping: out of routing at once, no grace period."""
    held: bool = False
    """Its app restarts (``devmesh restart``): its calls wait at its sidecar, or go to
    another instance of its version if there is one."""
    held_at: float = 0.0

    def member(self) -> Member:
        """As the roster keeps it."""
        return Member(**{f.name: getattr(self, f.name) for f in fields(Member)})

    @classmethod
    def of_member(cls, member: Member) -> Proxy:
        return cls(**asdict(member))


@dataclass
class Absent:
    """A proxy that is not connected (its link dropped, or a restarted control plane
    remembers it): it keeps its place in routing, as it last was, for ``DISCONNECT_GRACE``
    seconds after ``since``, unless it says hello again first or its runtime reports it
    dead."""

    proxy: Proxy
    since: float


@dataclass(frozen=True)
class Lifecycle:
    """What the runtime's supervisor says of an instance, shown in place of its health."""

    state: Literal["restarting", "stopped"]
    detail: str
    at: float
    """When the supervisor last said so."""


STOPPED_DETAIL = "killed with `devmesh kill`; `devmesh restart` or `devmesh up` starts it again"
RESTARTING_DETAIL = "`devmesh restart` is restarting it"
RESTART_SETTLE = 5.0
"""An instance started again shows ``restarting`` until it is ready, or this long: then its
health (``unhealthy``, say) says what is wrong with it."""


class Mesh:
    def __init__(
        self,
        store: StateStore,
        clock: Callable[[], float] = time.time,
        roster: Roster | None = None,
    ) -> None:
        """``roster``: where the proxies in routing are kept, so that a restarted control
        plane routes as before while its sidecars dial again."""
        self._store = store
        self.clock = clock
        self._roster = roster
        self._state: StoredState = store.load()
        self.project: Project | None = (
            parse_project(self._state.project) if self._state.project is not None else None
        )
        self.proxies: dict[str, Proxy] = {}
        """The connected proxies, by instance."""
        self.absent: dict[str, Absent] = {}
        """Proxies not connected that keep their place in routing for a while, by instance."""
        self._seen: set[str] = set()
        self.lifecycle: dict[str, Lifecycle] = {}
        """Instances the supervisor reports down (restarting) or held down, by instance."""
        self.restarts: dict[str, int] = {}
        """Times the supervisor started each instance's processes again."""
        self.metrics = Metrics()
        self.snapshot = Snapshot(version=self._state.snapshot_version)
        self.overrides = Overrides(self._state.overrides)
        self.breaker_history: dict[tuple[str, str], deque[BreakerEvent]] = {}
        """Each edge's latest breaker changes (opened, half-open, closed; ejections)."""
        self.edge_ejections: dict[tuple[str, str], int] = {}
        """Ejections per edge since the control plane started (a counter: never goes down)."""
        self._ejections_seen: dict[tuple[str, str], int] = {}
        """The ejection count each caller instance last reported per destination (its
        sidecar's own since it started), kept across reconnections."""
        if roster is not None:
            now = clock()
            for member in roster.load():
                self.absent[member.instance] = Absent(Proxy.of_member(member), now)
                self._seen.add(member.instance)
        # The first snapshot, made before any sidecar dials: the routes as they were kept.
        self.rebuild()

    # -- desired state ---------------------------------------------------------

    def apply_project(self, data: object) -> Project:
        """Validate and adopt a project sent by the CLI (config form); persisted. The runtime
        changes it keeps must fit it too, or nothing changes."""
        project = parse_project(data)
        kept = Overrides(copy.deepcopy(self._state.overrides))
        kept.forget_unknown(project)
        try:
            kept.check(project)
        except ConfigError as exc:
            raise UsageError(
                f"a change made at run time does not fit this project: {exc.problems[0].message}",
                "undo it first (see `devmesh fault ls`, `devmesh authz ls`, `devmesh policy "
                "SERVICE`), then apply the project again",
            ) from None
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

    def add_fault(self, service: str, fault: dict[str, Any], lasts: object) -> ActiveFault:
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

    def set_split(self, service: str, weights: Mapping[str, object]) -> None:
        """Split calls to ``service`` between its versions (validated as devmesh.yaml's split
        is, ``Overrides.check_split``); persisted."""
        self._service(service)
        checked = self.overrides.check_split(self._project(), service, weights)
        self._state.splits[service] = checked
        self._store.save(self._state)

    def clear_split(self, service: str) -> None:
        self._service(service)
        if self._state.splits.pop(service, None) is not None:
            self._store.save(self._state)

    def split_for(self, service: str) -> dict[str, float] | None:
        """The split in force for calls to ``service`` (a copy): the runtime one, else
        devmesh.yaml's; ``None``: none."""
        split: Mapping[str, float] | None = self._state.splits.get(service)
        if split is None and self.project is not None:
            split = self.project.policy(service).split
        return dict(split) if split is not None else None

    def _service(self, name: str) -> Any:
        if self.project is None or name not in self.project.services:
            known = ", ".join(self.project.services) if self.project else "none"
            raise UnknownService(f"there is no service named {name!r}", f"services: {known}")
        return self.project.services[name]

    # -- proxies -----------------------------------------------------------------

    def seen(self, instance: str) -> bool:
        """Whether a proxy of ``instance`` has said hello to this control plane (or was in
        the roster it started from)."""
        return instance in self._seen

    def connect(self, proxy: Proxy) -> None:
        self.proxies[proxy.instance] = proxy
        self.absent.pop(proxy.instance, None)
        self._seen.add(proxy.instance)

    def disconnect(self, proxy: Proxy) -> None:
        """``proxy``'s link ended: it keeps its place in routing for the grace period (unless
        it said it was leaving)."""
        # A proxy that reconnected quickly has already replaced this entry.
        if self.proxies.get(proxy.instance) is not proxy:
            return
        del self.proxies[proxy.instance]
        if not proxy.left:
            self.absent[proxy.instance] = Absent(proxy, self.clock())

    def leave(self, proxy: Proxy) -> None:
        """``proxy`` said it is stopping: out of routing now."""
        proxy.left = True
        if self.proxies.get(proxy.instance) is proxy:
            del self.proxies[proxy.instance]

    def hold(self, proxy: Proxy) -> None:
        proxy.held, proxy.held_at = True, self.clock()

    def release(self, instance: str) -> None:
        proxy = self.proxies.get(instance)
        if proxy is not None:
            proxy.held = False

    def expire_holds(self) -> bool:
        """Forget holds older than a sidecar keeps one (it ended them by itself, and its word
        was lost); True if any."""
        now = self.clock()
        stale = [p for p in self.proxies.values() if p.held and now - p.held_at > HOLD_LIMIT]
        for proxy in stale:
            proxy.held = False
        return bool(stale)

    def gone(self, instance: str, seen_at: float) -> bool:
        """The runtime saw ``instance``'s sidecar dead at ``seen_at``: it leaves routing now,
        connected or not (its link is about to close), unless it said hello since (a new
        sidecar, started again). True if that changed anything."""
        proxy = self.proxies.get(instance)
        if proxy is not None and proxy.connected_at >= seen_at:
            return False
        if proxy is not None:
            self.leave(proxy)
        return self.absent.pop(instance, None) is not None or proxy is not None

    def apply_supervision(self, report: Report) -> bool:
        """Take what the runtime's supervisor saw; True if the routes may have changed."""
        now = self.clock()
        changed = False
        for instance, down in report.down.items():
            self.lifecycle[instance] = Lifecycle("restarting", down.detail, now)
            if down.sidecar:
                changed = self.gone(instance, down.seen_at) or changed
        for instance in report.restarting:
            self.lifecycle[instance] = Lifecycle("restarting", RESTARTING_DETAIL, now)
        for instance in report.stopped:
            self.lifecycle[instance] = Lifecycle("stopped", STOPPED_DETAIL, now)
        said = {*report.down, *report.restarting, *report.stopped}
        for instance, life in list(self.lifecycle.items()):
            if instance in said:
                continue
            proxy = self.proxies.get(instance)
            # Restarting until it is back for real (connected and ready), or for a while:
            # then its own health says how it is.
            back = proxy is not None and proxy.health == "ready"
            if life.state == "stopped" or back or now - life.at > RESTART_SETTLE:
                del self.lifecycle[instance]
        self.restarts = dict(report.restarts)
        return changed

    def expire_absent(self) -> bool:
        """Forget the proxies disconnected for longer than the grace period; True if any."""
        now = self.clock()
        expired = [i for i, a in self.absent.items() if now - a.since > DISCONNECT_GRACE]
        for instance in expired:
            del self.absent[instance]
        return bool(expired)

    def _routed(self) -> list[Proxy]:
        """Every proxy routing may use: the connected ones and the absent ones in grace."""
        return [*self.proxies.values(), *(a.proxy for a in self.absent.values())]

    def report_breakers(
        self, proxy: Proxy, breakers: dict[str, dict[str, Any]]
    ) -> list[BreakerEvent]:
        """Take ``proxy``'s breaker report; returns the changes, as events (state changes and
        new ejections), also kept in ``breaker_history``."""
        now = self.clock()
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
            event: BreakerEvent = {
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
        if self._roster is not None:
            self._roster.save(p.member() for p in self._routed())
        return self.snapshot

    def _routes(self) -> dict[str, Route]:
        if self.project is None:
            return {}
        planned = {spec.id for spec in plan_instances(self.project)}
        routes = {}
        effective, faults = self.overrides.resolve(self.project)
        ready = [
            p
            for p in self._routed()
            if p.role == "sidecar" and p.health == "ready" and p.inbound and p.instance in planned
        ]
        # An instance held for its app's restart is left out while its version has another.
        serving = {(p.service, p.version) for p in ready if not p.held}
        for name in self.project.services:
            endpoints = sorted(
                (
                    Endpoint(instance=p.instance, version=p.version, address=p.inbound or "")
                    for p in ready
                    if p.service == name and not (p.held and (p.service, p.version) in serving)
                ),
                key=lambda e: e.instance,
            )
            split = self.split_for(name)
            service = self.project.services[name]
            routes[name] = Route(
                endpoints=tuple(endpoints),
                split=split,
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
