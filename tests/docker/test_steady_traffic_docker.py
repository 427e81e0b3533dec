"""Steady traffic through ``recipes/shop`` on the Docker runtime (issue 15): three minutes
of 100 req/s with nothing failing, then, on one mesh, a control-plane restart, restarts of
every service, dead sidecars and apps, and a fault, each under traffic. The scenarios are
in ``tests/scenarios.py``; the same run on the local runtime in
``tests/e2e/test_steady_traffic.py``."""

from __future__ import annotations

import pytest

from tests import scenarios
from tests.docker.conftest import DockerProjects
from tests.docker.test_shop_docker import _project as project_name
from tests.e2e.conftest import MeshProject


def on_docker(project: MeshProject, projects: DockerProjects) -> scenarios.Runtime:
    name = project_name(project)

    def kill(container: str) -> None:
        projects.client.containers.get(container).kill()

    def logs() -> dict[str, str]:
        found = projects.client.containers.list(
            all=True, filters={"label": [f"devmesh.project={name}"]}
        )
        return {
            c.name: c.logs().decode("utf-8", "replace")
            for c in found
            if c.labels.get("devmesh.role") in ("sidecar", "gateway")
        }

    return scenarios.Runtime(
        (),
        kill_sidecar=lambda instance: kill(f"{name}-{instance}-sidecar"),
        kill_app=lambda instance: kill(f"{name}-{instance}"),
        logs=logs,
    )


def shop_up(docker_projects: DockerProjects) -> MeshProject:
    shop = docker_projects.docker_recipe("shop")
    up = shop.cli("up", "--detach", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    return shop


@pytest.mark.timeout(scenarios.STEADY_SECONDS + 300)
def test_three_minutes_of_steady_traffic_fail_nothing(docker_projects: DockerProjects) -> None:
    shop = shop_up(docker_projects)
    result = scenarios.steady_traffic(
        shop, on_docker(shop, docker_projects), scenarios.STEADY_SECONDS
    )
    print(f"{result.sent} requests, p99 {result.latency_ms['p99']:.1f} ms")


@pytest.mark.timeout(600)
def test_restarts_deaths_and_faults_under_traffic(docker_projects: DockerProjects) -> None:
    shop = shop_up(docker_projects)
    runtime = on_docker(shop, docker_projects)
    scenarios.controlplane_restart(shop, runtime)
    scenarios.restarts_under_load(shop)
    took = scenarios.dead_processes_come_back(shop, runtime)
    print(f"back in routing after: {took}")
    scenarios.half_abort_and_reset(shop)
