"""DEVMESH_DATAPLANE=rust on the Docker runtime: the Rust sidecar image (the static
binary alone), its init step (`devmesh-proxy intercept`), traffic through the gateway
and between services by name, and `devmesh down` leaving nothing."""

from __future__ import annotations

import os
import time
import urllib.request
from typing import Any

import pytest

from devmesh.runtime.dataplane import DATAPLANE_ENV, MUSL_BINARY, MUSL_BUILD_COMMAND, crate_dir
from tests.docker.conftest import DockerProjects, leftovers
from tests.e2e.conftest import MeshProject, free_port

pytestmark = pytest.mark.docker

N = 10

API = """\
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"from": "api", "path": self.path}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
# It calls the api by name, with no proxy settings: only the redirect puts its
# sidecar in the path.
WEB = """\
import http.server, json, os, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with opener.open("http://api:8001" + self.path, timeout=10) as r:
            inner = json.loads(r.read())
        body = json.dumps({"from": "web", "inner": inner}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
DOCKERFILE = """\
ARG DEVMESH_BASE_IMAGE
FROM ${DEVMESH_BASE_IMAGE}
COPY web.py api.py /
"""


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def edge_counts(project: MeshProject) -> dict[tuple[str, str], int]:
    return {(e["source"], e["destination"]): e["requests"] for e in project.status()["edges"]}


@pytest.fixture
def musl_binary() -> None:
    if not (crate_dir() / MUSL_BINARY).is_file():
        text = f"no static devmesh-proxy binary: build it with `{MUSL_BUILD_COMMAND}`"
        if os.environ.get("DEVMESH_REQUIRE_DOCKER") == "1":
            pytest.fail(text)
        pytest.skip(text)


def test_the_rust_sidecar_carries_traffic_in_docker_and_down_leaves_nothing(
    docker_projects: DockerProjects, musl_binary: None
) -> None:
    port = free_port()
    project = docker_projects.docker_yaml(
        "services:\n"
        f"  web:\n    build: .\n    command: python3 /web.py\n    port: 8000\n"
        f"    expose: {port}\n    depends_on: [api]\n"
        "  api:\n    build: .\n    command: python3 /api.py\n    port: 8001\n",
        name="rustplane",
        **{"web.py": WEB, "api.py": API, "Dockerfile": DOCKERFILE},
    )
    project.env[DATAPLANE_ENV] = "rust"
    up = project.cli("up", "--detach", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "devmesh/sidecar-rust:" in up.stdout, up.stdout

    client = docker_projects.client
    label = {"label": [f"devmesh.project-dir={project.dir}"]}
    found = client.containers.list(all=True, filters=label)
    proxies = [c for c in found if c.labels["devmesh.role"] in ("sidecar", "gateway")]
    assert len(proxies) == 3
    for container in proxies:
        config = container.attrs["Config"]
        assert config["Image"].startswith("devmesh/sidecar-rust:"), container.name
        assert config["Entrypoint"] == ["/usr/local/bin/devmesh-proxy"], container.name
    for container in (c for c in found if c.labels["devmesh.role"] == "service"):
        env = container.attrs["Config"]["Env"]
        assert not [v for v in env if v.lower().startswith(("http_proxy=", "https_proxy="))], (
            f"{container.name} has proxy settings: interception must be transparent"
        )

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for i in range(N):
        with opener.open(f"http://127.0.0.1:{port}/item/{i}", timeout=10) as response:
            assert response.status == 200
            assert response.read() == (
                b'{"from": "web", "inner": {"from": "api", "path": "/item/%d"}}' % i
            )

    expected = {("ingress", "web"): N, ("web", "api"): N}
    wait_until(
        lambda: all(edge_counts(project).get(e, 0) >= n for e, n in expected.items()),
        20,
        "the control plane to count the requests the Rust sidecars carried",
    )
    assert {e: c for e, c in edge_counts(project).items() if e in expected} == expected

    down = project.cli("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert leftovers(client, project.dir) == []
