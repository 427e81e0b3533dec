"""Who the mesh routes to, as proxies come and go: a dropped link keeps an instance's place for
the grace period, a restarted control plane starts from the roster it kept, a sidecar the
runtime saw die leaves at once (unless it said hello since), a held instance makes way for
another of its version. On a fake clock, without sockets."""

from __future__ import annotations

from pathlib import Path

from devmesh.controlplane import mesh as mesh_module
from devmesh.controlplane import statusview
from devmesh.controlplane.mesh import Mesh, Proxy
from devmesh.controlplane.roster import Roster
from devmesh.controlplane.store import StateStore
from devmesh.runtime.supervision import Down, Report

PROJECT = {
    "name": "shop",
    "services": {
        "frontend": {"command": "true", "port": 8000},
        "catalog": {
            "port": 8000,
            "replicas": 2,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true", "replicas": 1}},
        },
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock) -> Mesh:
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=clock, roster=Roster(tmp_path / "r"))
    if mesh.project is None:
        mesh.apply_project(PROJECT)
    return mesh


def catalog(instance: str, version: str = "v1", health: str = "ready") -> Proxy:
    port = 9000 + sum(map(ord, instance)) % 1000
    return Proxy("catalog", version, instance, "sidecar", f"127.0.0.1:{port}", health=health)


def routed(mesh: Mesh) -> set[str]:
    mesh.rebuild()
    return {e.instance for e in mesh.snapshot.routes["catalog"].endpoints}


def state(mesh: Mesh, instance: str) -> str:
    entry = next(
        i
        for s in statusview.status(mesh)["services"]
        for i in s["instances"]
        if i["id"] == instance
    )
    return str(entry["state"])


def test_a_dropped_link_keeps_its_place_for_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    mesh = make(tmp_path, clock)
    proxy = catalog("catalog-v1-1")
    mesh.connect(proxy)
    assert routed(mesh) == {"catalog-v1-1"}
    mesh.disconnect(proxy)
    assert routed(mesh) == {"catalog-v1-1"}, "a blink changes no routing"
    assert state(mesh, "catalog-v1-1") == "disconnected"
    clock.now += mesh_module.DISCONNECT_GRACE - 1
    assert not mesh.expire_absent()
    mesh.connect(catalog("catalog-v1-1"))  # it dials again in time
    clock.now += 60
    assert not mesh.expire_absent()
    assert routed(mesh) == {"catalog-v1-1"}


def test_one_away_past_the_grace_period_leaves_routing(tmp_path: Path) -> None:
    clock = Clock()
    mesh = make(tmp_path, clock)
    proxy = catalog("catalog-v1-1")
    mesh.connect(proxy)
    mesh.disconnect(proxy)
    clock.now += mesh_module.DISCONNECT_GRACE + 0.1
    assert mesh.expire_absent()
    assert routed(mesh) == set()


def test_one_that_says_it_is_leaving_goes_at_once(tmp_path: Path) -> None:
    mesh = make(tmp_path, Clock())
    proxy = catalog("catalog-v1-1")
    mesh.connect(proxy)
    mesh.leave(proxy)
    mesh.disconnect(proxy)
    assert routed(mesh) == set()


def test_a_restarted_control_plane_routes_as_before_until_its_sidecars_are_back(
    tmp_path: Path,
) -> None:
    clock = Clock()
    before = make(tmp_path, clock)
    for proxy in (catalog("catalog-v1-1"), catalog("catalog-v2-1", "v2")):
        before.connect(proxy)
    before.connect(catalog("catalog-v1-2", health="starting"))
    first = routed(before)
    version = before.snapshot.version

    after = make(tmp_path, clock)  # a new control plane over the same folder
    assert after.snapshot.version > version, "versions never go back"
    assert {e.instance for e in after.snapshot.routes["catalog"].endpoints} == first
    assert state(after, "catalog-v1-1") == "disconnected"
    clock.now += mesh_module.DISCONNECT_GRACE + 1
    assert after.expire_absent()
    assert routed(after) == set(), "the ones that never came back leave after the grace"


def test_a_roster_that_cannot_be_read_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "r").write_text('{"format": 1, "members": [{"instance": 3}]}')
    mesh = make(tmp_path, Clock())
    assert routed(mesh) == set()


def test_a_sidecar_seen_dead_leaves_at_once_unless_it_said_hello_since(tmp_path: Path) -> None:
    clock = Clock()
    mesh = make(tmp_path, clock)
    old = catalog("catalog-v1-1")
    old.connected_at = 900.0
    mesh.connect(old)
    report = Report(down={"catalog-v1-1": Down("its sidecar exited", sidecar=True, seen_at=950.0)})
    assert mesh.apply_supervision(report)
    assert routed(mesh) == set()
    assert state(mesh, "catalog-v1-1") == "restarting"

    new = catalog("catalog-v1-1")
    new.connected_at = 960.0  # started again and connected after it was seen dead
    mesh.connect(new)
    assert not mesh.apply_supervision(report), "a stale report does not throw out the new one"
    assert routed(mesh) == {"catalog-v1-1"}
    mesh.apply_supervision(Report(restarts={"catalog-v1-1": 1}))
    assert state(mesh, "catalog-v1-1") == "ready", "back for real: ready and connected"


def test_a_held_instance_is_shown_stopped_and_its_restarts_are_counted(tmp_path: Path) -> None:
    mesh = make(tmp_path, Clock())
    mesh.apply_supervision(Report(stopped={"catalog-v2-1"}, restarts={"catalog-v1-1": 3}))
    entries = {i["id"]: i for s in statusview.status(mesh)["services"] for i in s["instances"]}
    assert entries["catalog-v2-1"]["state"] == "stopped"
    assert "devmesh kill" in entries["catalog-v2-1"]["detail"]
    assert entries["catalog-v1-1"]["restarts"] == 3


def test_a_held_instance_makes_way_for_another_of_its_version_only(tmp_path: Path) -> None:
    mesh = make(tmp_path, Clock())
    one, two, v2 = catalog("catalog-v1-1"), catalog("catalog-v1-2"), catalog("catalog-v2-1", "v2")
    for proxy in (one, two, v2):
        mesh.connect(proxy)
    mesh.hold(one)
    assert routed(mesh) == {"catalog-v1-2", "catalog-v2-1"}, "v1-2 takes v1's calls"
    mesh.hold(v2)
    assert "catalog-v2-1" in routed(mesh), "the only v2: its calls wait at its sidecar"
    assert state(mesh, "catalog-v2-1") == "restarting"
    mesh.release("catalog-v1-1")
    mesh.release("catalog-v2-1")
    assert routed(mesh) == {"catalog-v1-1", "catalog-v1-2", "catalog-v2-1"}
