"""The mesh as users read it (``GET /v1/status``, the event stream's status): the read model.

Built on demand from what the mesh model (``mesh.Mesh``) keeps and what the
metrics counted; nothing here changes either. The shapes are
``devmesh.payloads``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NotRequired, TypedDict, cast

from devmesh.controlplane.mesh import DISCONNECT_GRACE, Mesh
from devmesh.controlplane.metrics import DEFAULT_WINDOW, Series
from devmesh.controlplane.metrics import EdgeSecurity as SecurityCounter
from devmesh.payloads import (
    Breaker,
    BreakerEvent,
    Edge,
    EdgeSecurity,
    Instance,
    InstanceState,
    Service,
    Status,
    Traffic,
)
from devmesh.plan import plan_instances, url_of

HELD_DETAIL = "its app restarts; calls to it wait at its sidecar meanwhile"
LINK_DOWN_DETAIL = "its sidecar's link to the control plane is down"
NOT_CONNECTED_DETAIL = "its sidecar is not connected to the control plane"

_BREAKER_RANK: dict[str, int] = {"open": 2, "half-open": 1, "closed": 0}


class _BreakerHistory(TypedDict):
    """An edge's ``breaker_history``, given with ``history`` only."""

    breaker_history: NotRequired[list[BreakerEvent]]


def status(mesh: Mesh, window: int = DEFAULT_WINDOW, history: bool = False) -> Status:
    """Services and instances, with traffic over the last ``window`` whole seconds, each
    edge's breaker; ``history`` adds each edge's and service's requests per second over the
    last minute (and each edge's latest breaker changes)."""
    now = mesh.clock()

    def traffic(series: Series | None) -> Traffic | None:
        if series is None:
            return None
        data = series.view(now, window).to_json()
        if history:
            data["history"] = series.history(now)
        return data

    project = mesh.project
    metrics = mesh.metrics
    services: list[Service] = []
    modes = mesh.mtls_modes()
    if project is not None:
        by_service: dict[str, list[Instance]] = {n: [] for n in project.services}
        for spec in plan_instances(project):
            by_service[spec.service].append(_instance(mesh, spec.id, spec.version, traffic))
        rules = mesh.rules()
        services = [
            {
                "name": name,
                "url": url_of(project, name),
                "versions": [v.name for v in svc.versions],
                "split": mesh.split_for(name),
                "mtls": modes.get(name),
                "authz": [r.to_json() for r in rules if r.rule.service == name],
                "instances": by_service[name],
                "traffic": traffic(metrics.services.get(name)),
                "by_version": {
                    v.name: traffic(metrics.versions.get((name, v.name))) for v in svc.versions
                },
            }
            for name, svc in project.services.items()
        ]
    edges: list[Edge] = []
    for (src, dst), series in sorted(metrics.edges.items()):
        seen = traffic(series)
        if seen is None:  # an edge always has a series: never so
            continue
        kept: _BreakerHistory = (
            {"breaker_history": list(mesh.breaker_history.get((src, dst), ()))} if history else {}
        )
        edges.append(
            {
                **seen,
                "source": src,
                "destination": dst,
                "breaker": breaker(mesh, src, dst, now),
                "security": edge_security(mesh, src, dst, modes),
                **kept,
            }
        )
    return {
        "project": project.name if project else None,
        "snapshot_version": mesh.snapshot.version,
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
            for p in sorted(mesh.proxies.values(), key=lambda p: p.instance)
        ],
        "faults": [fault.to_json(now) for fault in mesh.faults()],
        "telemetry": {
            "records": metrics.records,
            "dropped": metrics.dropped,
            "malformed": metrics.malformed,
        },
    }


def edge_security(mesh: Mesh, source: str, destination: str, modes: dict[str, str]) -> EdgeSecurity:
    """The edge's mTLS mode (its destination's), whether it is locked (strict: only mTLS
    gets in), how its requests went, and what authorization denied or audited."""
    mode = modes.get(destination)
    seen = (mesh.metrics.security.get((source, destination)) or SecurityCounter()).to_json()
    shown: Literal["locked", "mtls", "plaintext"]
    if mode == "strict":
        shown = "locked"  # only mTLS from the mesh gets in
    elif mode == "off" or seen["last"] == "plaintext":
        shown = "plaintext"
    else:
        shown = "mtls"  # permissive: the mesh's calls use mTLS, others may not
    return {**seen, "mode": mode, "locked": mode == "strict", "shown": shown}


def breaker(mesh: Mesh, source: str, destination: str, now: float) -> Breaker:
    """The edge's breaker: the worst of its callers' (open, then half-open, then closed;
    of two open ones, one in panic: routing to all), with the reason and the time until
    it tries again."""

    def badness(breaker: Breaker) -> tuple[int, bool]:
        return _BREAKER_RANK.get(breaker["state"], 0), breaker["panic"]

    worst: Breaker = {"state": "closed", "reason": None, "retry_in": None, "panic": False}
    for proxy in mesh.proxies.values():
        if proxy.service != source or destination not in proxy.breakers:
            continue
        reported = cast(Breaker, dict(proxy.breakers[destination]))
        retry_in = reported.get("retry_in")
        if retry_in is not None:
            reported["retry_in"] = max(0.0, retry_in - (now - proxy.breakers_at))
        reported["panic"] = bool(reported.get("panic"))  # a sidecar of before says none
        if badness(reported) > badness(worst):
            worst = reported
    return worst


def _instance(
    mesh: Mesh,
    instance: str,
    version: str,
    traffic: Callable[[Series | None], Traffic | None],
) -> Instance:
    proxy = mesh.proxies.get(instance)
    absent = mesh.absent.get(instance)
    life = mesh.lifecycle.get(instance)
    state: InstanceState
    if proxy is not None and proxy.held:
        state, detail, address = "restarting", HELD_DETAIL, proxy.inbound
    elif life is not None:
        state, detail = life.state, life.detail
        address = proxy.inbound if proxy is not None else None
    elif proxy is not None:
        state, detail, address = _health(proxy.health), proxy.detail, proxy.inbound
    elif absent is not None:
        state, address = "disconnected", absent.proxy.inbound
        left = max(0.0, DISCONNECT_GRACE - (mesh.clock() - absent.since))
        detail = LINK_DOWN_DETAIL
        if absent.proxy.health == "ready":
            detail += f"; still routed to for {left:.0f}s unless it dials again"
    else:
        state = "disconnected" if mesh.seen(instance) else "starting"
        detail, address = NOT_CONNECTED_DETAIL, None
    return {
        "id": instance,
        "version": version,
        "state": state,
        "detail": detail,
        "address": address,
        "restarts": mesh.restarts.get(instance, 0),
        "served": traffic(mesh.metrics.instances.get(instance)),
    }


def _health(health: str) -> InstanceState:
    """A proxy's health as an instance's state (the roster's ``HEALTH_STATES``)."""
    return cast(InstanceState, health)
