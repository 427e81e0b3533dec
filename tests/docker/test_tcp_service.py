"""A service that does not speak HTTP (protocol: tcp) works in the Docker mesh, untouched."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from tests.docker.conftest import DockerProjects
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.docker

# Server-first, like MySQL's greeting: a proxy that waited for the client to speak
# first (to sniff HTTP) would hang here.
GREETER = """\
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"HELLO greeter\\n")
        name = self.rfile.readline().strip()
        self.wfile.write(b"hi " + name + b"\\n")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 7000), H).serve_forever()
"""
WEB = """\
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with socket.create_connection(("greeter", 7000), timeout=5) as s:
            f = s.makefile("rwb")
            greeting = f.readline().strip()
            f.write(b"web\\n"); f.flush()
            body = greeting + b" / " + f.readline().strip()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
"""
DOCKERFILE = """\
ARG DEVMESH_BASE_IMAGE
FROM ${DEVMESH_BASE_IMAGE}
COPY greeter.py web.py /
"""


def test_a_tcp_service_is_reached_by_name_and_from_the_host(
    docker_projects: DockerProjects,
) -> None:
    web_port, greeter_port = free_port(), free_port()
    project = docker_projects.docker_yaml(
        "services:\n"
        f"  web:\n    build: .\n    command: python3 /web.py\n    port: 8000\n"
        f"    expose: {web_port}\n    depends_on: [greeter]\n"
        f"  greeter:\n    build: .\n    command: python3 /greeter.py\n    port: 7000\n"
        f"    expose: {greeter_port}\n    protocol: tcp\n",
        **{"greeter.py": GREETER, "web.py": WEB, "Dockerfile": DOCKERFILE},
    )
    up = project.cli("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"tcp://127.0.0.1:{greeter_port}" in up.stdout

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{web_port}/", timeout=10) as response:
        assert response.read() == b"HELLO greeter / hi web"

    with socket.create_connection(("127.0.0.1", greeter_port), timeout=10) as conn:
        stream = conn.makefile("rwb")
        assert stream.readline() == b"HELLO greeter\n"
        stream.write(b"host\n")
        stream.flush()
        assert stream.readline() == b"hi host\n"

    status = project.status()
    greeter = next(s for s in status["services"] if s["name"] == "greeter")
    assert greeter["url"] == f"tcp://127.0.0.1:{greeter_port}"
    assert greeter["instances"][0]["state"] == "ready", "its TCP health check passes"
