"""Steady traffic through ``recipes/shop`` on the local runtime (issue 15): minutes of
100 req/s with nothing failing, across a control-plane restart, restarts, dead sidecars and
apps, clients hanging up and a fault. The scenarios are in ``tests/scenarios.py``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests import scenarios
from tests.e2e.conftest import MeshProject

pytestmark = pytest.mark.e2e


def local(project: MeshProject) -> scenarios.Runtime:
    def pid_of(name: str) -> int:
        return int(next(p["pid"] for p in project.runtime()["processes"] if p["name"] == name))

    def kill_sidecar(instance: str) -> None:
        os.kill(pid_of(f"{instance}.sidecar"), signal.SIGKILL)

    def kill_app(instance: str) -> None:
        os.killpg(pid_of(instance), signal.SIGKILL)

    def logs() -> dict[str, str]:
        folder = project.dir / ".devmesh" / "logs"
        found = [*folder.glob("*.sidecar.log"), folder / "ingress.log"]
        return {path.name: Path(path).read_text() for path in found}

    return scenarios.Runtime(("--runtime", "local"), kill_sidecar, kill_app, logs)


@pytest.mark.timeout(scenarios.STEADY_SECONDS + 120)
def test_three_minutes_of_steady_traffic_fail_nothing(shop: MeshProject) -> None:
    result = scenarios.steady_traffic(shop, local(shop), scenarios.STEADY_SECONDS)
    print(f"{result.sent} requests, p99 {result.latency_ms['p99']:.1f} ms")


@pytest.mark.timeout(180)
def test_a_control_plane_killed_and_started_again_under_traffic_fails_nothing(
    shop: MeshProject,
) -> None:
    scenarios.controlplane_restart(shop, local(shop))


@pytest.mark.timeout(180)
def test_restarting_every_service_under_traffic_fails_nothing(shop: MeshProject) -> None:
    scenarios.restarts_under_load(shop)


@pytest.mark.timeout(180)
def test_dead_sidecars_and_apps_come_back_by_themselves(shop: MeshProject) -> None:
    took = scenarios.dead_processes_come_back(shop, local(shop))
    print(f"back in routing after: {took}")


@pytest.mark.timeout(180)
def test_a_half_abort_fault_shows_as_half_and_its_reset_ends_it_at_once(
    shop: MeshProject,
) -> None:
    scenarios.half_abort_and_reset(shop)
