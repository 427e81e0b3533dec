"""Fixtures for tests against the real Docker daemon.

Without a daemon these tests are skipped, unless ``DEVMESH_REQUIRE_DOCKER=1``
(CI sets it), which makes a missing daemon a failure. Nothing is pulled: the
Python base image is built from Debian packages by ``scripts/build-base-image``
when it is not on the machine yet (about 30 s, once).

Every project gets a unique name and is torn down after its test, even a
failing one: ``devmesh down``, then any container or network still carrying
its labels is removed and reported as a leak.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from devmesh.runtime.docker.daemon import DaemonUnavailable, connect
from tests.e2e.conftest import REPO, MeshProject, ProjectFactory

pytestmark = pytest.mark.docker

BASE_IMAGE = os.environ.get("DEVMESH_BASE_IMAGE", "devmesh/python-base:bookworm")
LABEL_DIR = "devmesh.project-dir"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = connect()
    except DaemonUnavailable as exc:
        if os.environ.get("DEVMESH_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DEVMESH_REQUIRE_DOCKER=1 but {exc.message}")
        pytest.skip(f"no Docker daemon: {exc.message}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        result = subprocess.run(
            [str(REPO / "scripts" / "build-base-image"), BASE_IMAGE],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"could not build the base image {BASE_IMAGE}:\n{result.stderr}")
    return BASE_IMAGE


def leftovers(client: docker.DockerClient, project_dir: Path) -> list[str]:
    """Names of containers and networks that still carry ``project_dir``'s label."""
    label = {"label": [f"{LABEL_DIR}={project_dir}"]}
    found = [c.name for c in client.containers.list(all=True, filters=label)]
    return found + [str(n.name) for n in client.networks.list(filters=label)]


def remove_leftovers(client: docker.DockerClient, project_dir: Path) -> None:
    label = {"label": [f"{LABEL_DIR}={project_dir}"]}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for network in client.networks.list(filters=label):
        network.remove()


def remove_images(client: docker.DockerClient, project: MeshProject) -> None:
    """The images devmesh built for the project (each test's have a unique name)."""
    config = next(
        (
            project.dir / n
            for n in ("devmesh.yaml", "docker-compose.yml")
            if (project.dir / n).exists()
        ),
        None,
    )
    match = re.search(r"(?m)^name: (\S+)", config.read_text()) if config else None
    if match is None:
        return
    for image in client.images.list(filters={"label": f"devmesh.project={match.group(1)}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


class DockerProjects(ProjectFactory):
    """Projects run on the Docker runtime, on the test base image, under unique names."""

    def __init__(self, root: Path, client: docker.DockerClient, base: str) -> None:
        super().__init__(root)
        self.client = client
        self.base = base

    def docker_recipe(self, name: str) -> MeshProject:
        project = self.recipe(name, project_name=f"{name}-{secrets.token_hex(3)}")
        project.env["DEVMESH_BASE_IMAGE"] = self.base
        return project

    def docker_yaml(self, text: str, name: str = "project", **files: str) -> MeshProject:
        unique = f"{name}-{secrets.token_hex(3)}"
        project = self.from_yaml(f"name: {unique}\n{text}", name=name, **files)
        project.env["DEVMESH_BASE_IMAGE"] = self.base
        return project

    def teardown_docker(self) -> list[str]:
        leaked = []
        for project in self.made:
            project.cli("down", timeout=120)
            left = leftovers(self.client, project.dir)
            if left:
                leaked += left
                remove_leftovers(self.client, project.dir)
            remove_images(self.client, project)
        return leaked


@pytest.fixture
def docker_projects(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> Iterator[DockerProjects]:
    factory = DockerProjects(tmp_path, docker_client, base_image)
    yield factory
    leaked = factory.teardown_docker()
    processes = factory.teardown()
    assert not leaked, f"containers or networks left after the test and `devmesh down`: {leaked}"
    assert not processes, f"processes left running after the test: {processes}"
