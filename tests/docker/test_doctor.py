"""`devmesh doctor` against the real daemon: what up would use, and what to fix."""

from __future__ import annotations

import json

import pytest

from tests.docker.conftest import DockerProjects
from tests.e2e.conftest import MeshProject

pytestmark = pytest.mark.docker


def test_doctor_names_the_runtime_and_finds_nothing_to_fix(docker_projects: DockerProjects) -> None:
    shop = docker_projects.docker_recipe("shop")
    result = shop.cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "`devmesh up` uses docker" in result.stdout
    assert "nothing to fix" in result.stdout
    report = json.loads(shop.cli("doctor", "--json").stdout)
    checks = {f["check"]: f["outcome"] for f in report["findings"]}
    assert checks["docker"] == "ok"
    assert checks["base image"] == "ok"
    assert checks[f"port {shop.expose}"] == "ok"


def test_doctor_says_what_to_fix(docker_projects: DockerProjects) -> None:
    shop = docker_projects.docker_recipe("shop")
    result = shop.cli("doctor", "--base-image", "devmesh-test/absent-base:1")
    assert result.returncode == 1
    assert "devmesh-test/absent-base:1 is not on this machine" in result.stdout
    assert "fix: pull it" in result.stdout
    assert "scripts/build-base-image" in result.stdout


def test_without_a_daemon_up_runs_the_shop_as_local_processes(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    shop.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    doctor = shop.cli("doctor")
    assert "`devmesh up` uses local: no Docker daemon answers" in doctor.stdout
    up = shop.cli("up", "--detach")
    assert up.returncode == 0, up.stderr
    assert "on the local runtime (no Docker daemon answers" in up.stdout
    assert shop.cli("down").returncode == 0


def test_a_docker_mesh_is_not_started_again_on_the_local_runtime(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    assert shop.cli("up", "--detach").returncode == 0
    local = shop.cli("up", "--detach", "--runtime", "local")
    assert local.returncode == 2
    assert "already running on the docker runtime" in local.stderr
    assert "devmesh down" in local.stderr
    assert shop.status()["project"] == _name(shop)


def _name(project: MeshProject) -> str:
    return next(
        line.split(": ", 1)[1]
        for line in (project.dir / "devmesh.yaml").read_text().splitlines()
        if line.startswith("name: ")
    )


def test_doctor_on_a_project_of_commands_only_does_not_fail_on_docker_findings(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    command: python3 -m http.server $PORT\n    port: 8000\n"
    )
    result = project.cli("doctor", "--base-image", "devmesh-test/absent-base:1")
    assert result.returncode == 0, result.stdout
    assert "`devmesh up` uses local" in result.stdout
    assert "! base image" in result.stdout, "a warning, not a failure: up would not use Docker"


def test_doctor_does_not_ask_to_pull_an_image_the_project_builds(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    build: .\n    image: devmesh-test/web:dev\n    port: 8000\n",
        Dockerfile="ARG DEVMESH_BASE_IMAGE\nFROM ${DEVMESH_BASE_IMAGE}\n",
    )
    result = project.cli("doctor")
    assert result.returncode == 0, result.stdout
    assert "docker pull devmesh-test/web:dev" not in result.stdout
