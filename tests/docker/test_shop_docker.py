"""recipes/shop on the Docker runtime, driven through the CLI as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from typing import Any

import docker
import pytest

from tests.docker.conftest import DockerProjects, leftovers
from tests.e2e.conftest import MeshProject
from tests.e2e.test_shop import get_json

pytestmark = pytest.mark.docker

N = 30


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def edge_counts(project: MeshProject) -> dict[tuple[str, str], int]:
    return {(e["source"], e["destination"]): e["requests"] for e in project.status()["edges"]}


def containers_of(client: docker.DockerClient, project: MeshProject) -> dict[str, Any]:
    label = {"label": [f"devmesh.project-dir={project.dir}"]}
    return {c.name: c for c in client.containers.list(all=True, filters=label)}


def test_shop_in_docker_counts_every_request_exactly_and_down_leaves_nothing(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    up = shop.cli("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "on the docker runtime" in up.stdout
    for step in ("sidecar image", "image of frontend, catalog, pricing", "sidecars"):
        assert step in up.stdout, f"no progress line for {step!r}:\n{up.stdout}"
    assert re.search(r"catalog\s+2 instances ready\s+\d+\.\d+s", up.stdout), up.stdout

    versions = [get_json(shop.url + "/")["catalog_version"] for _ in range(N)]
    assert set(versions) == {"v1", "v2"}, "both versions answer behind the one name"

    expected = {("ingress", "frontend"): N, ("frontend", "catalog"): N, ("catalog", "pricing"): N}
    wait_until(
        lambda: all(edge_counts(shop).get(edge, 0) >= n for edge, n in expected.items()),
        15,
        "the control plane to count every request",
    )
    assert {e: c for e, c in edge_counts(shop).items() if e in expected} == expected

    client = docker_projects.client
    found = containers_of(client, shop)
    services = [c for c in found.values() if c.labels["devmesh.role"] == "service"]
    assert len(services) == 4
    for container in services:
        env = container.attrs["Config"]["Env"]
        assert not [v for v in env if v.lower().startswith(("http_proxy=", "https_proxy="))], (
            f"{container.name} has proxy settings: interception must be transparent"
        )
        assert container.attrs["HostConfig"]["NetworkMode"].startswith("container:")
    gateway = next(c for c in found.values() if c.labels["devmesh.role"] == "gateway")
    bindings = [b for ports in gateway.attrs["HostConfig"]["PortBindings"].values() for b in ports]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(shop.expose)}]

    down = shop.cli("down")
    assert down.returncode == 0, down.stderr
    assert leftovers(client, shop.dir) == []
    with pytest.raises(urllib.error.URLError):
        get_json(shop.url + "/")


def test_up_twice_keeps_everything_and_a_change_recreates_only_what_changed(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    assert shop.cli("up", "--detach").returncode == 0
    client = docker_projects.client
    before = {name: c.id for name, c in containers_of(client, shop).items()}

    again = shop.cli("up", "--detach")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert "built" not in again.stdout.replace("up to date", ""), "nothing needed a rebuild"
    assert {name: c.id for name, c in containers_of(client, shop).items()} == before

    config = shop.dir / "devmesh.yaml"
    config.write_text(
        config.read_text().replace(
            "    command: python3 pricing.py\n",
            "    command: python3 pricing.py\n    env: {PRICING_MODE: test}\n",
        )
    )
    changed = shop.cli("up", "--detach")
    assert changed.returncode == 0, changed.stderr
    after = {name: c.id for name, c in containers_of(client, shop).items()}
    recreated = sorted(name for name in after if after[name] != before.get(name))
    assert recreated == [f"{_project(shop)}-pricing-1"], (
        "only the changed service's container is new; its sidecar and the rest are kept"
    )
    assert get_json(shop.url + "/")["items"], "the mesh still answers"


def _project(project: MeshProject) -> str:
    match = re.search(r"(?m)^name: (.*)$", (project.dir / "devmesh.yaml").read_text())
    assert match is not None
    return match.group(1)


def test_killing_one_of_two_replicas_the_mesh_routes_around_it(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    config = shop.dir / "devmesh.yaml"
    text = config.read_text()
    config.write_text(text.replace("  catalog:\n", "  catalog:\n    replicas: 2\n"))
    assert shop.cli("up", "--detach").returncode == 0

    killed = shop.cli("kill", "catalog-v1-1")
    assert killed.returncode == 0, killed.stderr

    def state(instance: str) -> str:
        for service in shop.status()["services"]:
            for entry in service["instances"]:
                if entry["id"] == instance:
                    return str(entry["state"])
        raise AssertionError(f"no instance {instance}")

    # At once, before any health check could notice: a request the dead instance's
    # sidecar cannot hand over fails over to another instance.
    for _ in range(20):
        assert get_json(shop.url + "/")["items"]
    wait_until(lambda: state("catalog-v1-1") != "ready", 15, "the mesh to see catalog-v1-1 down")
    for _ in range(20):
        assert get_json(shop.url + "/")["items"]
    served = {
        i["id"]: (i["served"] or {}).get("requests", 0)
        for s in shop.status()["services"]
        for i in s["instances"]
        if s["name"] == "catalog"
    }
    assert served["catalog-v1-2"] > 0, "the remaining v1 replica took traffic"

    restarted = shop.cli("restart", "catalog")
    assert restarted.returncode == 0, restarted.stderr
    wait_until(lambda: state("catalog-v1-1") == "ready", 15, "catalog-v1-1 to come back")


def test_logs_show_a_service_and_its_sidecar(docker_projects: DockerProjects) -> None:
    shop = docker_projects.docker_recipe("shop")
    assert shop.cli("up", "--detach").returncode == 0
    get_json(shop.url + "/")
    service = shop.cli("logs", "pricing")
    assert service.returncode == 0, service.stderr
    assert "pricing listening on" in service.stdout
    sidecar = shop.cli("logs", "catalog", "--sidecar", "-n", "50")
    assert "catalog-v1-1 | " in sidecar.stdout
    assert "catalog-v2-1 | " in sidecar.stdout
    assert "connected to control plane" in sidecar.stdout
    status = json.loads(shop.cli("status", "--json").stdout)
    assert all(i["state"] == "ready" for s in status["services"] for i in s["instances"])


def follow(project: MeshProject, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(project.env)
    return subprocess.Popen(
        [sys.executable, "-m", "devmesh", "-C", str(project.dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def read_until(process: subprocess.Popen[str], needle: str, seen: list[str]) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    for line in process.stdout:
        seen.append(line)
        if needle in line:
            return
        assert time.monotonic() < deadline, "".join(seen)
    pytest.fail(f"the output ended before {needle!r}:\n{''.join(seen)}")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_attached_up_follows_the_containers_and_a_stop_signal_removes_them(
    docker_projects: DockerProjects, stop: signal.Signals
) -> None:
    shop = docker_projects.docker_recipe("shop")
    process = follow(shop, "up")
    seen: list[str] = []
    try:
        read_until(process, "following logs; Ctrl-C stops the mesh", seen)
        assert get_json(shop.url + "/")["items"]
        read_until(process, 'frontend: "GET / HTTP/1.1" 200', seen)
        logs = follow(shop, "logs", "frontend", "-f", "-n", "0")
        done = threading.Event()

        def traffic() -> None:  # until the follower shows a new line, whenever it starts
            while not done.wait(0.3):
                get_json(shop.url + "/")

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            read_until(logs, 'frontend: "GET / HTTP/1.1" 200', [])
            logs.send_signal(signal.SIGINT)
            logs.communicate(timeout=10)
            assert logs.returncode == 0
        finally:
            done.set()
            sender.join(timeout=10)
            if logs.poll() is None:
                logs.kill()
                logs.communicate()
        process.send_signal(stop)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping the mesh" in rest
    assert process.returncode == 0
    assert leftovers(docker_projects.client, shop.dir) == []


def test_moving_an_exposed_port_to_a_taken_one_is_refused_and_changes_nothing(
    docker_projects: DockerProjects,
) -> None:
    shop = docker_projects.docker_recipe("shop")
    assert shop.cli("up", "--detach").returncode == 0
    before = {n: c.id for n, c in containers_of(docker_projects.client, shop).items()}
    config = shop.dir / "devmesh.yaml"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config.write_text(config.read_text().replace(f"expose: {shop.expose}", f"expose: {taken}"))
        moved = shop.cli("up", "--detach")
    assert moved.returncode == 2, moved.stdout + moved.stderr
    assert (
        f"port {taken} on 127.0.0.1, where frontend is exposed, is already in use" in moved.stderr
    )
    assert {n: c.id for n, c in containers_of(docker_projects.client, shop).items()} == before
    assert get_json(shop.url + "/")["items"], "the mesh still answers on its old port"
