"""Mesh.report_breakers: breaker changes as events, and an ejection counter that never goes
down (a sidecar that reconnects, or restarts and counts from 0, adds only what is new)."""

from __future__ import annotations

from pathlib import Path

from devmesh.controlplane import statusview
from devmesh.controlplane.mesh import Mesh, Proxy
from devmesh.controlplane.store import StateStore


def caller(instance: str = "frontend-1") -> Proxy:
    return Proxy(service="frontend", version="v1", instance=instance, role="sidecar", inbound=None)


def report(state: str, ejections: int) -> dict[str, dict[str, object]]:
    return {"catalog": {"state": state, "ejections": ejections, "reason": "5 consecutive 5xx"}}


def test_ejections_count_up_across_reconnections_and_restarts(tmp_path: Path) -> None:
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=lambda: 1000.0)
    first = caller()
    assert [e["state"] for e in mesh.report_breakers(first, report("open", 1))] == ["open"]
    assert mesh.report_breakers(first, report("open", 1)) == [], "nothing new"
    assert mesh.ejections("frontend", "catalog") == 1

    again = caller()  # the same sidecar, reconnected: it reports its count so far
    assert mesh.report_breakers(again, report("open", 2))[0]["ejections"] == 2
    assert mesh.ejections("frontend", "catalog") == 2
    assert mesh.report_breakers(caller(), report("closed", 2)) == [], "closed, nothing new"

    restarted = caller()  # the sidecar restarted: it counts from 0 again
    mesh.report_breakers(restarted, report("open", 1))
    assert mesh.ejections("frontend", "catalog") == 3, "never goes down"


def test_a_reconnection_with_nothing_new_is_not_an_event(tmp_path: Path) -> None:
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=lambda: 1000.0)
    mesh.report_breakers(caller(), report("closed", 3))
    assert mesh.report_breakers(caller(), report("closed", 3)) == []


def test_the_edge_s_breaker_says_whether_a_caller_is_in_panic(tmp_path: Path) -> None:
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=lambda: 1000.0)
    assert statusview.breaker(mesh, "frontend", "catalog", 1000.0)["panic"] is False, (
        "nobody reported"
    )
    one, two = caller("frontend-1"), caller("frontend-2")
    for proxy in (one, two):
        mesh.connect(proxy)
    mesh.report_breakers(one, {"catalog": {"state": "open", "retry_in": 5.0, "panic": False}})
    assert statusview.breaker(mesh, "frontend", "catalog", 1000.0)["panic"] is False
    mesh.report_breakers(two, {"catalog": {"state": "open", "retry_in": 9.0, "panic": True}})
    shown = statusview.breaker(mesh, "frontend", "catalog", 1000.0)
    assert (shown["state"], shown["panic"], shown["retry_in"]) == ("open", True, 9.0)
    mesh.report_breakers(two, {"catalog": {"state": "closed"}})  # a sidecar that says nothing
    assert statusview.breaker(mesh, "frontend", "catalog", 1000.0)["panic"] is False
