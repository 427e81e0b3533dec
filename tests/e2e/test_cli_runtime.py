"""The CLI around a running mesh: attached `up`, `logs`, replicas behind an exposed port,
and exact counts under concurrent load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import ProjectFactory, free_port, processes_in
from tests.e2e.test_shop import DIRECT, edges_by_pair, get_json

pytestmark = pytest.mark.e2e

WHOAMI = textwrap.dedent(
    """\
    import json, os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self):
            body = json.dumps({"instance": os.environ["DEVMESH_INSTANCE"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    print("serving", os.environ["DEVMESH_INSTANCE"], flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def test_attached_up_follows_logs_and_ctrl_c_stops_everything(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    process = subprocess.Popen(
        [sys.executable, "-m", "devmesh", "-C", str(shop.dir), "up", "--runtime", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        for line in process.stdout:
            seen.append(line)
            if "pricing-1" in line and "pricing listening on" in line:
                break  # the services' own output is being followed
            assert time.monotonic() < deadline, "".join(seen)
        assert any("following logs; Ctrl-C stops the mesh" in line for line in seen)
        assert get_json(shop.url + "/")["items"]
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping the mesh" in rest
    assert "stopped 10 processes" in rest
    assert processes_in(shop.dir) == []


def test_attached_up_returns_when_the_mesh_is_stopped_elsewhere(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    process = subprocess.Popen(
        [sys.executable, "-m", "devmesh", "-C", str(shop.dir), "up", "--runtime", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if "following logs" in line:
                break
        assert shop.cli("down").returncode == 0
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "the mesh was stopped" in rest


def test_logs_of_a_service_prefix_each_instance(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0
    get_json(shop.url + "/")

    catalog = shop.cli("logs", "catalog", "-n", "50")
    assert catalog.returncode == 0, catalog.stderr
    assert "catalog-v1-1 | catalog-v1 listening on 127.0.0.1:" in catalog.stdout
    assert "catalog-v2-1 | catalog-v2 listening on 127.0.0.1:" in catalog.stdout

    one = shop.cli("logs", "pricing-1")
    assert one.stdout.startswith("pricing listening on 127.0.0.1:")

    sidecar = shop.cli("logs", "frontend", "--sidecar")
    assert "connected to control plane" in sidecar.stdout

    typo = shop.cli("logs", "catalgo")
    assert typo.returncode == 2
    assert "there is no service or instance named 'catalgo'" in typo.stderr
    assert "did you mean 'catalog'?" in typo.stderr


def test_an_exposed_service_with_replicas_spreads_host_traffic(projects: ProjectFactory) -> None:
    port = free_port()
    project = projects.from_yaml(
        textwrap.dedent(
            f"""\
            name: replicas
            services:
              web:
                command: python3 whoami.py
                expose: {port}
                replicas: 3
            """
        ),
        **{"whoami.py": WHOAMI},
    )
    assert project.cli("up", "--detach").returncode == 0
    answered = [get_json(f"http://127.0.0.1:{port}/")["instance"] for _ in range(30)]
    assert sorted(set(answered)) == ["web-1", "web-2", "web-3"]
    assert {answered.count(i) for i in set(answered)} == {10}, "round robin: 10 each"


def test_counts_are_exact_under_concurrent_load(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0
    total = 400

    def one(_: int) -> int:
        with DIRECT.open(shop.url + "/", timeout=30) as response:
            response.read()
            return int(response.status)

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(total)))
    assert statuses == [200] * total

    deadline = time.monotonic() + 15
    while True:
        edges = edges_by_pair(shop.status())
        counts = {
            pair: edges.get(pair, {}).get("requests", 0)
            for pair in (("ingress", "frontend"), ("frontend", "catalog"), ("catalog", "pricing"))
        }
        if min(counts.values()) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counts == dict.fromkeys(counts, total)
    status = json.loads(shop.cli("status", "--json").stdout)
    # Three edges, each request recorded by the caller's sidecar and the callee's.
    assert status["telemetry"] == {"records": total * 3 * 2, "dropped": 0, "malformed": 0}


def test_kill_and_restart_on_the_local_runtime(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0

    def state(instance: str) -> str:
        states = {i["id"]: i["state"] for s in shop.status()["services"] for i in s["instances"]}
        return str(states[instance])

    killed = shop.cli("kill", "catalog-v1-1")
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 15
    while state("catalog-v1-1") == "ready":
        assert time.monotonic() < deadline, "the mesh never saw catalog-v1-1 go down"
        time.sleep(0.1)
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(10)} == {"v2"}

    restarted = shop.cli("restart", "catalog")
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted catalog-v1-1" in restarted.stdout
    deadline = time.monotonic() + 15
    while state("catalog-v1-1") != "ready":
        assert time.monotonic() < deadline, "catalog-v1-1 did not come back"
        time.sleep(0.1)
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(10)} == {"v1", "v2"}

    unknown = shop.cli("kill", "catalog")
    assert unknown.returncode == 2
    assert "kill takes one instance of catalog: catalog-v1-1, catalog-v2-1" in unknown.stderr
