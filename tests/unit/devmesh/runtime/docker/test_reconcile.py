"""devmesh.runtime.docker.reconcile: desired containers against observed ones, as a plan."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from devmesh.config import parse_project
from devmesh.config.model import Project
from devmesh.plan import plan_instances
from devmesh.runtime.docker.reconcile import Observed, Plan, plan
from devmesh.runtime.docker.topology import ContainerSpec, desired_containers, init_spec
from tests.unit.devmesh.runtime.docker.test_topology import SETTINGS

SHOP: dict[str, Any] = {
    "name": "shop",
    "services": {
        "frontend": {"image": "shop/frontend", "port": 8000, "expose": 8080},
        "catalog": {
            "image": "shop/catalog",
            "port": 8001,
            "versions": {"v1": {}, "v2": {"replicas": 2}},
        },
        "pricing": {"image": "shop/pricing", "port": 8002},
    },
}


def shop(change: dict[str, Any] | None = None) -> Project:
    data = copy.deepcopy(SHOP)
    for name, settings in (change or {}).items():
        data["services"][name].update(settings)
    return parse_project(data)


def desired(
    project: Project | None = None, images: dict[str, str] | None = None
) -> list[ContainerSpec]:
    """The containers of ``project`` (the shop), with an image id per instance."""
    project = project or shop()
    ids = {spec.id: f"sha256:{spec.id}" for spec in plan_instances(project)}
    ids.update(images or {})
    return desired_containers(project, ids, SETTINGS)


def observe(specs: Iterable[ContainerSpec], *, stopped: Iterable[str] = ()) -> list[Observed]:
    """What Docker would report after creating ``specs`` (those named in ``stopped`` exited)."""
    down = set(stopped)
    return [
        Observed(s.name, s.role, s.spec_hash, s.name not in down, id=f"id-{s.name}") for s in specs
    ]


def names(specs: Iterable[ContainerSpec | Observed]) -> list[str]:
    return [s.name for s in specs]


def assert_consistent(result: Plan, wanted: list[ContainerSpec]) -> None:
    """Every desired container is either kept or created, exactly once."""
    assert sorted(names(result.keep) + names(result.create)) == sorted(names(wanted))


def test_nothing_observed_creates_everything() -> None:
    wanted = desired()
    result = plan(wanted, [])
    assert sorted(names(result.create)) == sorted(names(wanted))
    assert result.keep == []
    assert result.remove == []
    assert not result.unchanged


def test_sidecars_and_the_gateway_are_created_before_service_containers() -> None:
    result = plan(desired(), [])
    roles = [spec.role for spec in result.create]
    first_service = roles.index("service")
    assert set(roles[:first_service]) == {"sidecar", "gateway"}
    assert set(roles[first_service:]) == {"service"}
    created = names(result.create)
    for spec in result.create:
        if spec.join is not None:
            assert created.index(spec.join) < created.index(spec.name)


def test_everything_running_with_the_same_hashes_is_unchanged() -> None:
    wanted = desired()
    result = plan(wanted, observe(desired()))
    assert result.unchanged
    assert result.create == []
    assert result.remove == []
    assert sorted(names(result.keep)) == sorted(names(wanted))


def test_a_changed_service_spec_recreates_only_that_container() -> None:
    before = desired()
    wanted = desired(images={"catalog-v2-1": "sha256:rebuilt"})
    result = plan(wanted, observe(before))
    assert names(result.create) == ["shop-catalog-v2-1"]
    assert result.create[0].image == "sha256:rebuilt"
    assert names(result.remove) == ["shop-catalog-v2-1"]
    assert result.remove[0].id == "id-shop-catalog-v2-1"
    assert "shop-catalog-v2-1-sidecar" in names(result.keep)
    assert not result.unchanged
    assert_consistent(result, wanted)


def test_a_changed_sidecar_recreates_it_and_its_service_container() -> None:
    before = desired()
    wanted = desired(shop({"pricing": {"health": {"path": "/ready"}}}))
    result = plan(wanted, observe(before))
    assert names(result.create) == ["shop-pricing-1-sidecar", "shop-pricing-1"]
    assert names(result.remove) == ["shop-pricing-1", "shop-pricing-1-sidecar"]
    assert_consistent(result, wanted)


def test_a_stopped_sidecar_is_recreated_with_its_service_container() -> None:
    # Same hashes: the service container is recreated only because its namespace goes away.
    wanted = desired()
    result = plan(wanted, observe(wanted, stopped=["shop-catalog-v1-1-sidecar"]))
    assert names(result.create) == ["shop-catalog-v1-1-sidecar", "shop-catalog-v1-1"]
    assert names(result.remove) == ["shop-catalog-v1-1", "shop-catalog-v1-1-sidecar"]
    assert_consistent(result, wanted)


def test_a_stopped_service_container_with_the_same_hash_is_recreated_alone() -> None:
    wanted = desired()
    result = plan(wanted, observe(wanted, stopped=["shop-pricing-1"]))
    assert names(result.create) == ["shop-pricing-1"]
    assert names(result.remove) == ["shop-pricing-1"]
    assert "shop-pricing-1-sidecar" in names(result.keep)


def test_a_stopped_gateway_is_recreated() -> None:
    wanted = desired()
    result = plan(wanted, observe(wanted, stopped=["shop-ingress"]))
    assert names(result.create) == ["shop-ingress"]
    assert names(result.remove) == ["shop-ingress"]


def test_a_missing_container_is_created_and_nothing_else_touched() -> None:
    wanted = desired()
    present = [o for o in observe(wanted) if o.name != "shop-catalog-v2-2"]
    result = plan(wanted, present)
    assert names(result.create) == ["shop-catalog-v2-2"]
    assert result.remove == []


def test_containers_no_longer_desired_are_removed_service_before_sidecar() -> None:
    project = shop()
    leftover_init = init_spec(project, desired(project)[0], SETTINGS)
    fewer = shop({"catalog": {"versions": {"v1": {}, "v2": {}}}, "frontend": {"expose": None}})
    wanted = desired(fewer)
    result = plan(wanted, observe([*desired(project), leftover_init]))
    assert names(result.remove) == [
        "shop-frontend-1-init",
        "shop-catalog-v2-2",
        "shop-ingress",
        "shop-catalog-v2-2-sidecar",
    ]
    assert [o.role for o in result.remove] == ["init", "service", "gateway", "sidecar"]
    assert result.create == []
    assert_consistent(result, wanted)


def test_removal_order_holds_whatever_order_docker_lists_them_in() -> None:
    leftovers = [
        Observed("shop-a-1-sidecar", "sidecar", "h1", True),
        Observed("shop-ingress", "gateway", "h2", True),
        Observed("shop-a-1", "service", "h3", True),
        Observed("shop-a-1-init", "init", "h4", False),
        Observed("shop-b-1", "service", "h5", False),
    ]
    for observed in (leftovers, leftovers[::-1]):
        result = plan([], observed)
        assert [o.role for o in result.remove] == [
            "init",
            "service",
            "service",
            "gateway",
            "sidecar",
        ]
        assert result.keep == []
        assert result.create == []
