"""Bad input on the Docker runtime: one clear sentence, a hint, and nothing half-started."""

from __future__ import annotations

import io
import socket
import tarfile
import urllib.request

import pytest

from tests.docker.conftest import DockerProjects, leftovers
from tests.docker.test_shop_docker import wait_until
from tests.e2e.conftest import MeshProject, free_port, processes_in

pytestmark = pytest.mark.docker

APP = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", 8000), H).serve_forever()
"""
DOCKERFILE = """\
ARG DEVMESH_BASE_IMAGE
FROM ${DEVMESH_BASE_IMAGE}
COPY app.py /app.py
CMD ["python3", "/app.py"]
"""


def assert_nothing_left(docker_projects: DockerProjects, project: MeshProject) -> None:
    assert leftovers(docker_projects.client, project.dir) == []
    assert processes_in(project.dir) == [], "a devmesh process was left running"
    assert not (project.dir / ".devmesh" / "runtime.json").exists()


def assert_user_error(result: object, code: int, *phrases: str) -> str:
    out = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert result.returncode == code, out  # type: ignore[attr-defined]
    assert "Traceback" not in out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    assert "hint: " in result.stderr  # type: ignore[attr-defined]
    return out


def test_no_daemon_says_so_and_suggests_the_local_runtime(docker_projects: DockerProjects) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    build: .\n    command: python3 app.py\n    port: 8000\n",
        **{"app.py": APP, "Dockerfile": DOCKERFILE},
    )
    project.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    result = project.cli("up", "--detach", "--runtime", "docker")
    assert_user_error(result, 1, "no Docker daemon answers", "--runtime local")
    assert_nothing_left(docker_projects, project)


def test_a_build_that_fails_shows_its_error_lines_and_starts_nothing(
    docker_projects: DockerProjects,
) -> None:
    broken = DOCKERFILE.replace("COPY app.py", "RUN echo 'about to fail' && false\nCOPY app.py")
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    build: .\n    port: 8000\n",
        **{"app.py": APP, "Dockerfile": broken},
    )
    result = project.cli("up", "--detach")
    out = assert_user_error(result, 1, "building the image of web failed", "about to fail")
    assert "Dockerfile" in out
    assert_nothing_left(docker_projects, project)


def test_a_port_already_taken_on_the_host_is_refused_before_anything_starts(
    docker_projects: DockerProjects,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        project = docker_projects.docker_yaml(
            f"services:\n  web:\n    build: .\n    port: 8000\n    expose: {port}\n",
            **{"app.py": APP, "Dockerfile": DOCKERFILE},
        )
        result = project.cli("up", "--detach")
        assert_user_error(result, 2, f"port {port} on 127.0.0.1", "devmesh.yaml:")
    assert_nothing_left(docker_projects, project)


def test_an_image_that_is_not_on_the_machine_suggests_build_or_pull(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    image: devmesh-test/absent:1\n    port: 8000\n"
    )
    result = project.cli("up", "--detach")
    assert_user_error(
        result,
        2,
        "the image devmesh-test/absent:1 of web is not on this machine",
        "`build:`",
        "docker pull devmesh-test/absent:1",
    )
    assert_nothing_left(docker_projects, project)


def test_a_service_that_exits_at_start_is_named_with_its_logs_and_everything_is_removed(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n"
        "  api:\n    build: .\n    port: 8000\n"
        "  web:\n    build: .\n    port: 8000\n    depends_on: [api]\n"
        "    command: >-\n"
        "      python3 -c \"print('cannot start: no config'); raise SystemExit(3)\"\n",
        **{"app.py": APP, "Dockerfile": DOCKERFILE},
    )
    result = project.cli("up", "--detach")
    assert_user_error(
        result, 1, "exited with code 3 before it was ready", "cannot start: no config"
    )
    assert_nothing_left(docker_projects, project)


def test_the_base_image_missing_says_how_to_get_one(docker_projects: DockerProjects) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    build: .\n    port: 8000\n",
        **{"app.py": APP, "Dockerfile": DOCKERFILE},
    )
    project.env["DEVMESH_BASE_IMAGE"] = "devmesh-test/no-such-base:1"
    result = project.cli("up", "--detach")
    assert_user_error(
        result,
        2,
        "the base image devmesh-test/no-such-base:1 is not on this machine",
        "--base-image",
    )
    assert_nothing_left(docker_projects, project)


def test_interception_env_needs_no_net_admin_and_still_counts_every_call(
    docker_projects: DockerProjects,
) -> None:
    caller = APP.replace(
        'self.wfile.write(b"ok")',
        'import urllib.request; self.wfile.write(urllib.request.urlopen("http://api/").read())',
    )
    port = free_port()
    project = docker_projects.docker_yaml(
        "interception: env\n"
        "services:\n"
        f"  web:\n    build: .\n    port: 8000\n    expose: {port}\n"
        "    depends_on: [api]\n    command: python3 /caller.py\n"
        "  api:\n    build: .\n    port: 8000\n",
        **{
            "app.py": APP,
            "caller.py": caller,
            "Dockerfile": DOCKERFILE.replace(
                "COPY app.py", "COPY caller.py /caller.py\nCOPY app.py"
            ),
        },
    )
    up = project.cli("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(5):
        with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.read() == b"ok"

    def calls() -> int:
        edges = project.status()["edges"]
        return sum(
            e["requests"] for e in edges if (e["source"], e["destination"]) == ("web", "api")
        )

    wait_until(lambda: calls() >= 5, 10, "the web -> api calls to be counted")
    assert calls() == 5


def test_a_from_image_that_is_not_here_is_named_and_nothing_is_pulled(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n  web:\n    build: .\n    port: 8000\n",
        **{"app.py": APP, "Dockerfile": "FROM devmesh-test/absent-base:1\nCOPY app.py /app.py\n"},
    )
    result = project.cli("up", "--detach")
    assert_user_error(
        result, 2, "builds FROM devmesh-test/absent-base:1, which is not on this machine"
    )
    assert "devmesh never pulls" in result.stderr
    assert_nothing_left(docker_projects, project)


def test_a_base_image_without_python_is_refused_clearly(docker_projects: DockerProjects) -> None:
    client = docker_projects.client
    tag = "devmesh-test/no-python:1"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = b"FROM scratch\nCOPY marker /marker\n"
        for name, content in (("Dockerfile", data), ("marker", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    try:
        project = docker_projects.docker_yaml("services:\n  web:\n    image: busybox-absent:1\n")
        project.env["DEVMESH_BASE_IMAGE"] = tag
        result = project.cli("up", "--detach")
        assert_user_error(result, 1, f"the base image {tag} cannot run python3")
        assert_nothing_left(docker_projects, project)
        probes = client.containers.list(all=True, filters={"ancestor": tag})
        assert probes == [], "the probe container was left behind"
    finally:
        client.images.remove(tag, force=True)


def test_a_failed_change_to_a_running_mesh_leaves_the_rest_running(
    docker_projects: DockerProjects,
) -> None:
    project = docker_projects.docker_yaml(
        "services:\n"
        "  api:\n    build: .\n    port: 8000\n"
        "  worker:\n    build: .\n    port: 8000\n",
        **{"app.py": APP, "Dockerfile": DOCKERFILE},
    )
    assert project.cli("up", "--detach").returncode == 0
    client = docker_projects.client
    label = {"label": [f"devmesh.project-dir={project.dir}"]}
    before = {c.name: c.id for c in client.containers.list(filters=label)}

    config = project.dir / "devmesh.yaml"
    config.write_text(
        config.read_text()
        + "    command: python3 -c \"raise SystemExit('worker has bad settings')\"\n"
    )
    failed = project.cli("up", "--detach")
    assert_user_error(
        failed, 1, "exited with code 1 before it was ready", "worker has bad settings"
    )
    assert "the rest is left as it was" in failed.stdout

    after = {c.name: c.id for c in client.containers.list(filters=label)}
    kept = {name: cid for name, cid in before.items() if "worker" not in name}
    assert {name: after.get(name) for name in kept} == kept, "api was not touched"
    assert not [name for name in after if name.endswith("-worker-1")], "the failed one is gone"
    status = project.status()
    api = next(s for s in status["services"] if s["name"] == "api")
    assert api["instances"][0]["state"] == "ready", "the control plane still runs"
