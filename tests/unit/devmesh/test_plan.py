"""devmesh.plan: the instances a project runs and the order services start in."""

from __future__ import annotations

from typing import Any

from devmesh.config import parse_project
from devmesh.config.model import Health, Project, Service, Version
from devmesh.plan import exposed, instance_id, plan_instances, service_instances, start_levels


def project(services: dict[str, Any]) -> Project:
    return parse_project({"name": "shop", "services": services})


SHOP = {
    "frontend": {
        "command": "python3 frontend.py",
        "port": 8000,
        "expose": 8080,
        "depends_on": ["catalog"],
        "health": {"path": "/healthz"},
    },
    "catalog": {
        "port": 8001,
        "depends_on": ["pricing"],
        "env": {"SHARED": "1", "WHO": "service"},
        "versions": {
            "v1": {"command": "python3 catalog.py", "env": {"WHO": "v1"}},
            "v2": {"command": "python3 catalog2.py", "replicas": 2},
        },
    },
    "pricing": {"command": "python3 pricing.py", "replicas": 3},
    "admin": {"command": "python3 admin.py", "expose": 9090},
}


def test_instance_ids_name_the_version_only_for_versioned_services() -> None:
    ids = [spec.id for spec in plan_instances(project(SHOP))]
    assert ids == [
        "frontend-1",
        "catalog-v1-1",
        "catalog-v2-1",
        "catalog-v2-2",
        "pricing-1",
        "pricing-2",
        "pricing-3",
        "admin-1",
    ]


def test_instance_id_directly_from_model_objects() -> None:
    plain = Service(name="pricing", versions=(Version(name="default"),))
    versioned = Service(name="catalog", versions=(Version(name="v1"), Version(name="v2")))
    single_named = Service(name="search", versions=(Version(name="beta"),))
    assert instance_id(plain, "default", 2) == "pricing-2"
    assert instance_id(versioned, "v2", 1) == "catalog-v2-1"
    assert instance_id(single_named, "beta", 1) == "search-beta-1"


def test_instances_carry_their_version_settings_and_the_service_port_and_health() -> None:
    specs = {spec.id: spec for spec in plan_instances(project(SHOP))}
    v1 = specs["catalog-v1-1"]
    assert (v1.service, v1.version, v1.index) == ("catalog", "v1", 1)
    assert v1.command == "python3 catalog.py"
    assert dict(v1.env) == {"SHARED": "1", "WHO": "v1"}
    assert v1.port == 8001
    v2 = specs["catalog-v2-2"]
    assert (v2.version, v2.index, v2.command) == ("v2", 2, "python3 catalog2.py")
    assert specs["frontend-1"].health == Health(path="/healthz")
    assert specs["pricing-3"].port is None


def test_service_instances_of_a_model_service_with_replicas() -> None:
    service = Service(
        name="worker", versions=(Version(name="default", command="run", replicas=2),), port=7
    )
    specs = service_instances(service)
    assert [(s.id, s.index, s.command, s.port) for s in specs] == [
        ("worker-1", 1, "run", 7),
        ("worker-2", 2, "run", 7),
    ]


def test_start_levels_put_each_service_after_its_dependencies() -> None:
    levels = start_levels(project(SHOP))
    assert [sorted(level) for level in levels] == [["admin", "pricing"], ["catalog"], ["frontend"]]


def test_start_levels_of_a_diamond() -> None:
    services = {
        "db": {"command": "db"},
        "cache": {"command": "cache"},
        "users": {"command": "users", "depends_on": ["db"]},
        "orders": {"command": "orders", "depends_on": ["db", "cache"]},
        "web": {"command": "web", "depends_on": ["users", "orders"]},
    }
    levels = start_levels(project(services))
    assert [sorted(level) for level in levels] == [["cache", "db"], ["orders", "users"], ["web"]]


def test_every_service_starts_exactly_once_and_after_its_dependencies() -> None:
    proj = project(SHOP)
    levels = start_levels(proj)
    position = {name: i for i, level in enumerate(levels) for name in level}
    assert sorted(position) == sorted(proj.services)
    assert sum(len(level) for level in levels) == len(proj.services)
    for name, service in proj.services.items():
        for dependency in service.depends_on:
            assert position[dependency] < position[name], f"{name} before {dependency}"


def test_exposed_lists_host_ports_of_exposed_services_only() -> None:
    assert exposed(project(SHOP)) == {"frontend": 8080, "admin": 9090}
    assert exposed(project({"a": {"command": "a"}})) == {}
