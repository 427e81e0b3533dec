"""recipes/compose: a plain docker-compose.yml, no devmesh.yaml, runs in the mesh."""

from __future__ import annotations

import re
import secrets
import shutil

import pytest

from tests.docker.conftest import DockerProjects, leftovers
from tests.docker.test_shop_docker import wait_until
from tests.e2e.conftest import RECIPES, MeshProject, free_port
from tests.e2e.test_shop import get_json

pytestmark = pytest.mark.docker


def compose_copy(docker_projects: DockerProjects) -> MeshProject:
    """The recipe in a tmp folder, with a unique project name and a free host port."""
    target = docker_projects.root / "compose"
    shutil.copytree(RECIPES / "compose", target, ignore=shutil.ignore_patterns(".devmesh"))
    compose = target / "docker-compose.yml"
    port = free_port()
    text = re.sub(r'"8081:8000"', f'"{port}:8000"', compose.read_text())
    compose.write_text(f"name: compose-{secrets.token_hex(3)}\n{text}")
    project = MeshProject(target, port, env={"DEVMESH_BASE_IMAGE": docker_projects.base})
    docker_projects.made.append(project)
    return project


def test_a_compose_project_comes_up_in_the_mesh_without_a_devmesh_yaml(
    docker_projects: DockerProjects,
) -> None:
    project = compose_copy(docker_projects)
    assert not (project.dir / "devmesh.yaml").exists()
    up = project.cli("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "on the docker runtime" in up.stdout
    assert re.search(r"warning: .*docker-compose\.yml:\d+: .*restart", up.stderr), up.stderr

    for _ in range(5):
        answer = get_json(project.url + "/")
        assert answer["api"]["service"] == "api", answer

    def web_to_api() -> int:
        edges = project.status()["edges"]
        return sum(
            e["requests"] for e in edges if (e["source"], e["destination"]) == ("web", "api")
        )

    wait_until(lambda: web_to_api() >= 5, 10, "the web -> api calls to be counted")
    assert web_to_api() == 5, "web's calls went through the mesh, transparently"

    assert project.cli("down").returncode == 0
    assert leftovers(docker_projects.client, project.dir) == []
